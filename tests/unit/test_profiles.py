"""The customer profile autoencoder's model (pure: built from the feature spec, fed generated rows)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from include.preference.features import spec
from include.preference.model import feature_statistics
from include.preference.profiles import (
    BLOCKS,
    PROFILE_DIM,
    PROFILE_FEATURES,
    SHARE_TARGETS,
    block_error,
    build_profile_model,
    columns_of,
    profiles_of,
    target_model,
)
from include.preference.segments.assign import segment_space

pytestmark = pytest.mark.unit


def customers(count: int, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    data: dict[str, np.ndarray] = {}
    shares = rng.dirichlet(np.full(len(SHARE_TARGETS), 0.3), count)
    for feature in spec.features_of("customer"):
        if feature.name in SHARE_TARGETS:
            data[feature.name] = shares[:, SHARE_TARGETS.index(feature.name)].astype("float32")
        elif feature.kind == "numeric":
            data[feature.name] = rng.poisson(3.0, count).astype("float32")
        else:
            data[feature.name] = np.array([f"v{i}" for i in rng.integers(0, 4, count)], dtype=object)
    return pd.DataFrame(data)


def statistics(frame: pd.DataFrame) -> dict[str, tuple[float, float]]:
    columns = {name: np.zeros(len(frame), "float32") for name in spec.numeric_names()}
    columns.update({name: frame[name].to_numpy() for name in frame if name in columns})
    return feature_statistics(columns)


def test_the_error_is_the_mean_of_the_two_blocks_errors_whatever_their_widths():
    import keras

    frame = customers(50)
    model = build_profile_model(statistics(frame))
    assert (len(SHARE_TARGETS), len(spec.features_of("customer", "numeric")) - len(SHARE_TARGETS)) == BLOCKS
    inputs = columns_of(frame)
    target = target_model(model).predict(inputs, verbose=0)
    reconstruction = keras.Model(model.input, model.get_layer("reconstruction").output).predict(inputs, verbose=0)
    error = model.predict(inputs, verbose=0).reshape(-1)
    np.testing.assert_allclose(error, block_error(target, reconstruction), rtol=1e-4)
    # Not the plain mean over all columns: the shares' block weighs half, with a third of the columns.
    plain = np.square(target - reconstruction).mean(axis=1)
    assert not np.allclose(error, plain, rtol=1e-3)


def test_the_share_block_keeps_the_proportions_of_a_customers_shares():
    frame = customers(200, seed=1)
    target = target_model(build_profile_model(statistics(frame))).predict(columns_of(frame), verbose=0)
    shares = frame[list(SHARE_TARGETS)].to_numpy(np.float64)
    centred = shares - shares.mean(axis=0)
    block = target[:, : len(SHARE_TARGETS)]
    # One scale for the whole block (not one per column): the block is the centred shares, scaled.
    ratio = block[np.abs(centred) > 1e-3] / centred[np.abs(centred) > 1e-3]
    assert ratio.std() / ratio.mean() < 1e-3 and ratio.mean() > 0


def test_fitting_lowers_the_error_and_every_customer_gets_a_profile():
    frame = customers(400, seed=2)
    model = build_profile_model(statistics(frame))
    before = profiles_of(model, frame)[1].mean()
    model.fit(columns_of(frame), np.zeros(len(frame)), epochs=30, batch_size=64, verbose=0)
    vectors, errors = profiles_of(model, frame)
    assert errors.mean() < 0.7 * before
    assert vectors.shape == (len(frame), PROFILE_DIM) and np.isfinite(vectors).all()
    assert set(PROFILE_FEATURES) == {f.name for f in spec.features_of("customer")}


def test_the_profile_space_is_every_column_at_unit_length_and_the_taste_space_the_first_sixteen():
    rng = np.random.default_rng(3)
    vectors = rng.normal(size=(10, PROFILE_DIM)).astype("float32")
    space = segment_space(vectors, "profile")
    np.testing.assert_allclose(np.linalg.norm(space, axis=1), 1.0, rtol=1e-5)
    np.testing.assert_allclose(space * np.linalg.norm(vectors, axis=1, keepdims=True), vectors, rtol=1e-5)
    with pytest.raises(ValueError, match="at least 16 columns"):
        segment_space(vectors, "taste")
    with pytest.raises(ValueError, match="unknown segment space"):
        segment_space(vectors, "embedding")
