"""The numpy all-MiniLM-L6-v2 reproduces the reference model: published similarities, tokens."""

from __future__ import annotations

import numpy as np
import pytest

from include.preference.text.minilm import MiniLM, basic_tokens

pytestmark = pytest.mark.unit


@pytest.fixture(scope="module")
def model():
    return MiniLM()


def test_cosine_similarities_match_the_reference_implementation(model):
    # Values printed by sentence-transformers for all-MiniLM-L6-v2 in its documentation.
    vectors = model.encode(
        [
            "The new movie is awesome",
            "The new movie is so great",
            "A man is eating food.",
            "A man is eating a piece of bread.",
        ]
    )
    assert vectors.shape == (4, 384)
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, rtol=1e-5)
    assert vectors[0] @ vectors[1] == pytest.approx(0.8939, abs=2e-3)
    assert vectors[2] @ vectors[3] == pytest.approx(0.7553, abs=2e-3)
    assert vectors[0] @ vectors[2] < 0.1


def test_padding_and_batching_do_not_change_an_embedding(model):
    alone = model.encode(["Great garden hose, sturdy and long."])
    batched = model.encode(["ok", "Great garden hose, sturdy and long.", "a much longer review " * 20], batch_size=3)
    np.testing.assert_allclose(batched[1], alone[0], atol=1e-5)


def test_wordpiece_tokens(model):
    assert basic_tokens("Naïve CAFÉ, isn't it?") == ["naive", "cafe", ",", "isn", "'", "t", "it", "?"]
    ids = model.tokenizer.encode("unbelievable hello")
    assert ids[0] == model.tokenizer.cls and ids[-1] == model.tokenizer.sep
    assert ids[1:-1] == [model.tokenizer.vocab["unbelievable"], model.tokenizer.vocab["hello"]]
    assert len(model.tokenizer.encode("word " * 1000)) == 256


def test_missing_model_files_name_the_fix(tmp_path):
    with pytest.raises(FileNotFoundError, match="make install"):
        MiniLM(tmp_path)
