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
    decision_metrics,
    f1_threshold,
    per_customer_ranking,
    ranking_metrics,
    sliced_ranking_metrics,
    threshold_metrics,
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


def test_f1_threshold_by_hand_and_ties_to_the_higher_threshold():
    labels = np.array([1, 0, 1, 0, 0])
    scores = np.array([0.9, 0.8, 0.7, 0.2, 0.1])
    # At 0.9: P=1, R=.5, F1=2/3; at 0.8: 2/4=.5; at 0.7: TP 2, predicted 3 -> 4/5; lower: worse.
    assert f1_threshold(labels, scores) == {"threshold": 0.7, "f1": pytest.approx(0.8)}
    # Equal scores are one candidate: 0.5 predicts both or neither.
    assert f1_threshold(np.array([1, 0]), np.array([0.5, 0.5]))["threshold"] == 0.5
    # Two thresholds with F1 2/3 each (0.9: TP1 of 1 predicted; 0.4: TP2 of 4): the higher is kept.
    tie = f1_threshold(np.array([1, 0, 0, 1, 0]), np.array([0.9, 0.6, 0.5, 0.4, 0.1]))
    assert tie == {"threshold": 0.9, "f1": pytest.approx(2 / 3)}
    with pytest.raises(ValueError, match="none positive"):
        f1_threshold(np.array([0, 0]), np.array([0.1, 0.2]))


def test_threshold_metrics_and_confusion_matrix():
    labels = np.array([1, 1, 0, 0, 1, 0])
    scores = np.array([0.9, 0.3, 0.6, 0.1, 0.5, 0.2])
    out = threshold_metrics(labels, scores, 0.5)  # predicted: 1 0 1 0 1 0
    confusion = ("true_positives", "false_positives", "false_negatives", "true_negatives")
    assert tuple(out[key] for key in confusion) == (2, 1, 1, 2)
    assert out["accuracy"] == pytest.approx(4 / 6) and out["precision"] == pytest.approx(2 / 3)
    assert out["recall"] == pytest.approx(2 / 3) and out["f1"] == pytest.approx(2 / 3)
    nothing = threshold_metrics(labels, scores, 0.95)
    assert nothing["precision"] == 0.0 and nothing["recall"] == 0.0 and nothing["f1"] == 0.0


def test_the_decision_threshold_never_looks_at_the_evaluated_split():
    rng = np.random.default_rng(3)
    validation_scores = rng.random(400)
    validation_labels = (rng.random(400) < validation_scores).astype(float)
    scores = rng.random(300)
    labels = (rng.random(300) < scores).astype(float)
    chosen = decision_metrics(validation_labels, validation_scores, labels, scores)
    assert chosen["threshold"] == f1_threshold(validation_labels, validation_scores)["threshold"]
    # The evaluated split's labels change the metrics at the threshold, never the threshold.
    for other in (1.0 - labels, rng.permutation(labels), np.ones_like(labels)):
        again = decision_metrics(validation_labels, validation_scores, other, scores)
        assert again["threshold"] == chosen["threshold"] and again["validation_f1"] == chosen["validation_f1"]
    assert decision_metrics(validation_labels, validation_scores, 1.0 - labels, scores)["f1"] != chosen["f1"]
    # ... while another validation split moves it.
    moved = decision_metrics(validation_labels, validation_scores**3, labels, scores)
    assert moved["threshold"] != chosen["threshold"]
    assert chosen["validation_examples"] == 400.0


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


def test_recall_splits_into_repeat_and_new_products():
    from include.preference.evaluation.metrics import repeat_and_new_recall

    recs = frame([("a", "x", 1), ("a", "n1", 2), ("b", "y", 1)])
    truth = frame([("a", "x"), ("a", "n1"), ("a", "n2"), ("b", "n3")], columns=("customer_id", "product_id"))
    history = frame([("a", "x"), ("b", "y")], columns=("customer_id", "product_id"))
    split = repeat_and_new_recall(recs, truth, history, 2)
    assert split["repeat_share"] == 0.25  # only a's x was bought before
    assert split["recall_repeat_at_k"] == 1.0 and split["customers_with_repeat"] == 1.0
    assert split["recall_new_at_k"] == pytest.approx((1 / 2 + 0.0) / 2)  # a: n1 of n1, n2; b: none of n3
    assert split["customers_with_new"] == 2.0


def test_the_paired_bootstrap_interval_holds_the_ratio_and_narrows_with_more_customers():
    from include.preference.evaluation.metrics import paired_bootstrap_ratio

    rng = np.random.default_rng(1)
    base = rng.random(200)
    better = base * 1.2
    small = paired_bootstrap_ratio(better, base, seed=3)
    assert small["ratio"] == pytest.approx(1.2) and small["low"] == pytest.approx(1.2) == small["high"]
    noisy = np.clip(base * 1.2 + rng.normal(0, 0.3, 200), 0, None)
    few = paired_bootstrap_ratio(noisy, base, seed=3)
    assert few["low"] < few["ratio"] < few["high"] and few["units"] == 200
    many_base = rng.random(5000)
    many = paired_bootstrap_ratio(np.clip(many_base * 1.2 + rng.normal(0, 0.3, 5000), 0, None), many_base, seed=3)
    assert many["high"] - many["low"] < few["high"] - few["low"]
    assert paired_bootstrap_ratio(noisy, base, seed=3) == few  # seeded: the same interval every run
    # Pairing matters: the same customers' noise cancels, an unpaired draw would not.
    assert paired_bootstrap_ratio(base + 0.01, base, seed=3)["low"] > 1.0
    assert math.isnan(paired_bootstrap_ratio(base, np.zeros(200))["ratio"])
    with pytest.raises(ValueError, match="paired values"):
        paired_bootstrap_ratio(base, base[:10])
