"""Ranking and classification metrics on small hand-checked cases, and the baselines' rules."""

from __future__ import annotations

import datetime as dt
import math

import numpy as np
import pandas as pd
import pytest

from include.preference.evaluation.baselines import buy_again, popular_products, popularity
from include.preference.evaluation.metrics import (
    classification_metrics,
    per_customer_ranking,
    ranking_metrics,
    sliced_ranking_metrics,
    top_k,
)

pytestmark = pytest.mark.unit


def frame(rows, columns=("customer_id", "product_id", "rank")):
    return pd.DataFrame(rows, columns=list(columns))


RECS = frame([("a", "p1", 1), ("a", "p2", 2), ("a", "p3", 3), ("b", "p9", 1), ("b", "p4", 2)])
TRUTH = frame([("a", "p2", 0), ("a", "p5", 0), ("b", "p4", 0), ("c", "p1", 0)])[["customer_id", "product_id"]]


def test_per_customer_ranking_matches_hand_computed_values():
    table = per_customer_ranking(RECS, TRUTH, k=3)
    # a: found p2 at rank 2 of 2 relevant; b: found p4 at rank 2 of 1 relevant; c: no list.
    assert table.loc["a", "recall_at_k"] == 0.5
    assert table.loc["a", "precision_at_k"] == pytest.approx(1 / 3)
    assert table.loc["a", "ndcg_at_k"] == pytest.approx((1 / math.log2(3)) / (1 + 1 / math.log2(3)))
    assert table.loc["b", "recall_at_k"] == 1.0
    assert table.loc["b", "ndcg_at_k"] == pytest.approx(1 / math.log2(3))
    assert table.loc["c"].tolist() == [0.0, 0.0, 0.0, 0.0]
    means = ranking_metrics(RECS, TRUTH, k=3)
    assert means["hit_rate_at_k"] == pytest.approx(2 / 3)
    assert means["recall_at_k"] == pytest.approx(0.5)


def test_k_cuts_the_list_and_a_perfect_list_scores_one():
    assert ranking_metrics(RECS, TRUTH, k=1)["hit_rate_at_k"] == 0.0
    perfect = frame([("a", "p2", 1), ("a", "p5", 2), ("b", "p4", 1), ("c", "p1", 1)])
    assert ranking_metrics(perfect, TRUTH, k=2) == {
        "recall_at_k": 1.0,
        "precision_at_k": pytest.approx(4 / 6),
        "ndcg_at_k": 1.0,
        "hit_rate_at_k": 1.0,
    }
    with pytest.raises(ValueError, match="k must be at least 1"):
        ranking_metrics(RECS, TRUTH, k=0)


def test_slices_split_customers_and_unknown_ones_are_counted():
    sliced = sliced_ranking_metrics(RECS, TRUTH, 3, {"tier": pd.Series({"a": "high", "b": "low"})})
    assert sliced["tier"]["high"]["recall_at_k"] == 0.5
    assert sliced["tier"]["low"]["recall_at_k"] == 1.0
    assert sliced["tier"]["unknown"]["customers"] == 1.0


def test_top_k_ranks_by_score_with_stable_ties():
    scored = pd.DataFrame({"customer_id": ["a"] * 4, "product_id": ["z", "y", "x", "w"], "score": [0.1, 0.9, 0.5, 0.5]})
    assert top_k(scored, 3)["product_id"].tolist() == ["y", "w", "x"]


def test_classification_metrics_and_one_class_error():
    labels = np.array([0, 0, 1, 1])
    metrics = classification_metrics(labels, np.array([0.1, 0.4, 0.35, 0.8]))
    assert metrics["auc"] == 0.75
    assert metrics["log_loss"] == pytest.approx(-np.mean(np.log([0.9, 0.6, 0.35, 0.8])))
    with pytest.raises(ValueError, match="both classes"):
        classification_metrics(np.array([1, 1]), np.array([0.2, 0.3]))


def test_baselines_use_only_history_up_to_the_cutoff():
    day = dt.date(2025, 1, 10)
    purchases = pd.DataFrame(
        {
            "customer_id": ["a", "a", "a", "b", "c", "c", "a"],
            "product_id": ["p1", "p1", "p2", "p2", "p2", "p3", "p9"],
            "day": [day - dt.timedelta(days=d) for d in (1, 5, 2, 1, 1, 3)] + [day + dt.timedelta(days=1)],
        }
    )
    assert popular_products(purchases, day, 2) == ["p2", "p1"]  # p9 is after the cutoff
    again = buy_again(purchases, ["a", "d"], day, 3)
    # a: p1 (two days) before p2 (one day), then the popular p3; d (no history): popular only.
    assert again[again.customer_id == "a"].product_id.tolist() == ["p1", "p2", "p3"]
    assert again[again.customer_id == "d"].product_id.tolist() == ["p2", "p1", "p3"]
    assert popularity(purchases, ["x", "y"], day, 2).groupby("customer_id").size().tolist() == [2, 2]
