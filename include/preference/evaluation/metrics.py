"""Metrics on a temporal holdout.

* classification, over scored (customer, product) examples: ROC AUC, PR AUC (average precision),
  log loss;
* the propensity as a decision ("will buy in the horizon: yes/no"): the threshold that maximises F1
  on a validation split (never the split it is then measured on), and at that threshold accuracy,
  precision, recall, F1 and the confusion matrix;
* ranking, per evaluated customer, over a top-K list against the set of products the customer
  bought in the horizon: recall@K (share of the bought products found), precision@K (share of the
  K slots that were bought), NDCG@K (binary gains, discounted by log2 of the rank), hit@K (at least
  one found). Averaged over the evaluated customers; a customer with no list scores 0.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import pandas as pd

CUSTOMER, PRODUCT, RANK = "customer_id", "product_id", "rank"
RANKING_METRICS = ("recall_at_k", "precision_at_k", "ndcg_at_k", "hit_rate_at_k")


def classification_metrics(labels: np.ndarray, scores: np.ndarray) -> dict[str, float]:
    """ROC AUC, PR AUC and log loss of probability ``scores`` for 0/1 ``labels``."""
    from sklearn.metrics import average_precision_score, log_loss, roc_auc_score

    labels = np.asarray(labels, dtype=np.float64)
    scores = np.clip(np.asarray(scores, dtype=np.float64), 1e-7, 1 - 1e-7)
    if labels.size == 0 or labels.min() == labels.max():
        raise ValueError(f"classification metrics need both classes; got {labels.size} labels of one class")
    return {
        "auc": float(roc_auc_score(labels, scores)),
        "pr_auc": float(average_precision_score(labels, scores)),
        "log_loss": float(log_loss(labels, scores, labels=[0.0, 1.0])),
        "examples": float(labels.size),
        "positive_rate": float(labels.mean()),
    }


def f1_threshold(labels: np.ndarray, scores: np.ndarray) -> dict[str, float]:
    """The score threshold (predict "buys" when ``score >= threshold``) with the highest F1 on
    ``labels``, and that F1. Of thresholds with equal F1 the highest wins (fewer false alarms).

    Call it on a validation split; :func:`threshold_metrics` then measures the threshold elsewhere.
    """
    labels = np.asarray(labels, dtype=np.float64)
    scores = np.asarray(scores, dtype=np.float64)
    positives = float(labels.sum())
    if labels.size == 0 or positives == 0:
        raise ValueError(f"choosing a threshold needs positive labels; got {labels.size} labels, none positive")
    order = np.argsort(-scores, kind="mergesort")
    ranked, hits = scores[order], labels[order]
    # Each distinct score is a candidate threshold: everything scored at or above it is predicted 1.
    last_of_each = np.r_[ranked[1:] != ranked[:-1], True]
    true_pos = np.cumsum(hits)[last_of_each]
    predicted = (np.arange(1, labels.size + 1, dtype=np.float64))[last_of_each]
    f1 = 2.0 * true_pos / (predicted + positives)
    best = float(f1.max())
    # Candidates run from the highest score down: the first with the best F1 is the highest threshold.
    index = int(np.flatnonzero(f1 == best)[0])
    return {"threshold": float(ranked[last_of_each][index]), "f1": best}


def threshold_metrics(labels: np.ndarray, scores: np.ndarray, threshold: float) -> dict[str, float]:
    """Accuracy, precision, recall, F1 and the confusion matrix of ``score >= threshold`` as the
    prediction "buys". Precision is 0 when nothing is predicted; recall 0 when nothing was bought."""
    labels = np.asarray(labels, dtype=np.float64) == 1.0
    predicted = np.asarray(scores, dtype=np.float64) >= threshold
    if labels.size == 0:
        raise ValueError("threshold metrics need at least one labelled example")
    tp = int(np.sum(predicted & labels))
    fp = int(np.sum(predicted & ~labels))
    fn = int(np.sum(~predicted & labels))
    tn = int(np.sum(~predicted & ~labels))
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {
        "threshold": float(threshold),
        "accuracy": (tp + tn) / labels.size,
        "precision": precision,
        "recall": recall,
        "f1": f1,
        "true_positives": float(tp),
        "false_positives": float(fp),
        "false_negatives": float(fn),
        "true_negatives": float(tn),
    }


def decision_metrics(
    validation_labels: np.ndarray,
    validation_scores: np.ndarray,
    labels: np.ndarray,
    scores: np.ndarray,
) -> dict[str, float]:
    """:func:`threshold_metrics` on (``labels``, ``scores``) at the threshold that maximises F1 on the
    validation split, with that split's size and F1 (``validation_*``)."""
    chosen = f1_threshold(validation_labels, validation_scores)
    return {
        **threshold_metrics(labels, scores, chosen["threshold"]),
        "validation_f1": chosen["f1"],
        "validation_examples": float(np.asarray(validation_labels).size),
    }


def top_k(scored: pd.DataFrame, k: int, score: str = "score") -> pd.DataFrame:
    """The ``k`` best products per customer from (customer_id, product_id, score), ranked 1..k.

    Ties are broken by product id, so the same scores always give the same lists.
    """
    ordered = scored.sort_values([CUSTOMER, score, PRODUCT], ascending=[True, False, True], kind="mergesort")
    ordered = ordered.drop_duplicates([CUSTOMER, PRODUCT])
    ordered[RANK] = ordered.groupby(CUSTOMER, sort=False).cumcount() + 1
    return ordered[ordered[RANK] <= k][[CUSTOMER, PRODUCT, RANK]].reset_index(drop=True)


def per_customer_ranking(recommendations: pd.DataFrame, truth: pd.DataFrame, k: int) -> pd.DataFrame:
    """Each evaluated customer's recall, precision, NDCG and hit at ``k`` (index: customer_id).

    Args:
        recommendations: (customer_id, product_id, rank) with ranks starting at 1.
        truth: (customer_id, product_id), the products each evaluated customer bought in the horizon.
    """
    if k < 1:
        raise ValueError(f"k must be at least 1, got {k}")
    truth = truth[[CUSTOMER, PRODUCT]].drop_duplicates()
    relevant = truth.groupby(CUSTOMER).size().rename("relevant")
    top = recommendations[recommendations[RANK] <= k][[CUSTOMER, PRODUCT, RANK]]
    hits = top.merge(truth, on=[CUSTOMER, PRODUCT], how="inner")
    hits = hits.assign(gain=1.0 / np.log2(hits[RANK].to_numpy(dtype=np.float64) + 1.0))
    found = hits.groupby(CUSTOMER).agg(hits=(PRODUCT, "size"), dcg=("gain", "sum"))
    table = relevant.to_frame().join(found, how="left").fillna({"hits": 0, "dcg": 0.0})
    discounts = np.cumsum(1.0 / np.log2(np.arange(2, k + 2, dtype=np.float64)))
    ideal = discounts[np.minimum(table["relevant"].to_numpy(), k) - 1]
    return pd.DataFrame(
        {
            "recall_at_k": table["hits"] / table["relevant"],
            "precision_at_k": table["hits"] / k,
            "ndcg_at_k": table["dcg"] / ideal,
            "hit_rate_at_k": (table["hits"] > 0).astype(float),
        },
        index=table.index,
    )


def ranking_metrics(recommendations: pd.DataFrame, truth: pd.DataFrame, k: int) -> dict[str, float]:
    """Mean recall, precision, NDCG and hit rate at ``k`` over the customers in ``truth``."""
    return mean_ranking(per_customer_ranking(recommendations, truth, k))


def mean_ranking(table: pd.DataFrame) -> dict[str, float]:
    """The means of a :func:`per_customer_ranking` table (zeros when it has no customer)."""
    return {name: float(table[name].mean()) if len(table) else 0.0 for name in RANKING_METRICS}


def sliced_ranking_metrics(
    recommendations: pd.DataFrame, truth: pd.DataFrame, k: int, slices: Mapping[str, pd.Series]
) -> dict[str, dict[str, dict[str, float]]]:
    """Ranking metrics per slice value, for each slicing (a Series from customer_id to a label).

    A customer missing from a slicing is counted under ``unknown``.
    """
    return sliced_means(per_customer_ranking(recommendations, truth, k), slices)


def sliced_means(table: pd.DataFrame, slices: Mapping[str, pd.Series]) -> dict[str, dict[str, dict[str, float]]]:
    """The means of a :func:`per_customer_ranking` table per slice value, for each slicing."""
    out: dict[str, dict[str, dict[str, float]]] = {}
    for name, labels in slices.items():
        groups = labels.reindex(table.index).fillna("unknown").astype(str)
        out[name] = {
            str(value): {"customers": float(len(part)), **{m: float(part[m].mean()) for m in RANKING_METRICS}}
            for value, part in table.groupby(groups)
        }
    return out


def repeat_and_new_recall(
    recommendations: pd.DataFrame, truth: pd.DataFrame, history: pd.DataFrame, k: int
) -> dict[str, float]:
    """Recall at ``k`` over the truth split into repeat products (the customer bought them before:
    ``history`` holds (customer_id, product_id) up to the cutoff) and new ones; each is the mean over
    the customers who have such truth, with the share of truth that is repeat."""
    truth = truth[[CUSTOMER, PRODUCT]].drop_duplicates()
    seen = history[[CUSTOMER, PRODUCT]].drop_duplicates().assign(_repeat=True)
    marked = truth.merge(seen, on=[CUSTOMER, PRODUCT], how="left")
    repeat = marked["_repeat"].eq(True).to_numpy(dtype=bool)
    out = {"repeat_share": float(repeat.mean()) if len(repeat) else 0.0}
    for name, part in (("repeat", marked[repeat]), ("new", marked[~repeat])):
        table = per_customer_ranking(recommendations, part[[CUSTOMER, PRODUCT]], k) if len(part) else None
        out[f"recall_{name}_at_k"] = float(table["recall_at_k"].mean()) if table is not None else 0.0
        out[f"customers_with_{name}"] = float(len(table)) if table is not None else 0.0
    return out


def paired_bootstrap_ratio(
    numerator: np.ndarray, denominator: np.ndarray, samples: int = 2000, seed: int = 0, level: float = 0.95
) -> dict[str, float]:
    """The ratio of two means over the same units (customers) and its paired bootstrap interval:
    units are drawn with replacement, the same draw for both, ``samples`` times (seeded).

    Returns ``ratio``, ``low`` and ``high`` (the percentile interval at ``level``), ``units`` and
    ``samples``; ``nan`` where the denominator's mean is zero.
    """
    numerator = np.asarray(numerator, dtype=np.float64)
    denominator = np.asarray(denominator, dtype=np.float64)
    if numerator.shape != denominator.shape or numerator.ndim != 1:
        raise ValueError(
            f"paired values must be two 1-D arrays of one length, got {numerator.shape} and {denominator.shape}"
        )
    units = len(numerator)
    nan = float("nan")
    if units == 0 or denominator.mean() == 0:
        return {"ratio": nan, "low": nan, "high": nan, "units": float(units), "samples": float(samples)}
    rng = np.random.default_rng(seed)
    ratios = np.empty(samples, dtype=np.float64)
    batch = max(1, min(samples, 20_000_000 // units))  # bounded memory for large pools
    for start in range(0, samples, batch):
        draw = rng.integers(0, units, size=(min(batch, samples - start), units))
        top, bottom = numerator[draw].mean(axis=1), denominator[draw].mean(axis=1)
        with np.errstate(divide="ignore", invalid="ignore"):
            ratios[start : start + len(draw)] = np.where(bottom > 0, top / bottom, np.nan)
    tail = (1.0 - level) / 2.0 * 100.0
    low, high = np.nanpercentile(ratios, [tail, 100.0 - tail])
    return {
        "ratio": float(numerator.mean() / denominator.mean()),
        "low": float(low),
        "high": float(high),
        "units": float(units),
        "samples": float(samples),
    }
