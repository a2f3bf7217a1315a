"""embed_reviews against the real S3 server: each day's reviews embedded once, customers' profiles
the normalised mean of their reviews of the last 90 days, a rerun identical."""

from __future__ import annotations

import numpy as np
import pytest

from include.preference import tasks
from include.preference.storage import PartitionRef, read_manifest, read_table
from include.preference.text.minilm import shared_model
from tests.support.lake import publish_from

pytestmark = [pytest.mark.integration]


def test_review_embeddings_and_customer_profiles(validated_history, lake_env, monkeypatch, tmp_path):
    store = lake_env
    monkeypatch.setenv("PREFERENCE_LOCAL_DIR", str(tmp_path / "local"))
    history, days = validated_history
    first, second = days[3], days[4]
    for day in (first, second):
        publish_from(history, PartitionRef("validated", "reviews", day), store)

    one = tasks.embed_reviews(first, run_id="r1")
    two = tasks.embed_reviews(second, run_id="r2")
    assert one["reviews"] > 0 and two["reviews"] > 0

    reviews = {day: read_table(store, PartitionRef("validated", "reviews", day)).to_pandas() for day in (first, second)}
    embedded = read_table(store, PartitionRef("scores", "review_embeddings", second)).to_pandas()
    assert sorted(embedded["review_id"]) == sorted(reviews[second]["review_id"])
    row = embedded.iloc[0]
    text = reviews[second].set_index("review_id").loc[row["review_id"], "text"]
    np.testing.assert_allclose(np.asarray(row["embedding"]), shared_model().encode([text])[0], atol=1e-5)

    profiles = read_table(store, PartitionRef("features", "customer_text", second)).to_pandas().set_index("customer_id")
    both = [reviews[first], reviews[second]]
    all_reviews = __import__("pandas").concat(both, ignore_index=True)
    assert sorted(profiles.index) == sorted(all_reviews["customer_id"].unique())
    customer = all_reviews["customer_id"].value_counts().index[0]
    mine = all_reviews[all_reviews["customer_id"] == customer]["text"].tolist()
    expected = shared_model().encode(mine).sum(axis=0)
    expected /= np.linalg.norm(expected)
    assert profiles.loc[customer, "reviews"] == len(mine)
    np.testing.assert_allclose(np.asarray(profiles.loc[customer, "embedding"]), expected, atol=1e-5)

    version = read_manifest(store, PartitionRef("features", "customer_text", second)).version
    tasks.embed_reviews(second, run_id="r2-again")
    assert read_manifest(store, PartitionRef("features", "customer_text", second)).version == version
