"""RFM value tiers (pure functions).

Recency (days since the last order, lower is better), frequency (distinct orders) and monetary
(revenue) are each clustered with one-dimensional k-means, k chosen by the elbow of the inertia
curve (the k farthest from the chord between k=1 and k=K_MAX). Clusters are scored 1..k in the
good direction and rescaled to 0..1; the three scores are summed (0..3) and cut into thirds:
``low`` below 1, ``mid`` below 2, ``high`` from 2.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

K_MAX = 8
TIERS = ("low", "mid", "high")
DIMENSIONS = {"recency": -1, "frequency": 1, "monetary": 1}  # +1: higher is better
# Where each dimension comes from in the customer features (features/customers/dt=D).
FEATURE_COLUMNS = {
    "recency": "customer_recency_days",
    "frequency": "customer_frequency",
    "monetary": "customer_monetary",
}


@dataclass(frozen=True)
class DimensionFit:
    k: int
    centers: list[float]
    inertias: list[float]


def elbow_k(inertias: list[float]) -> int:
    """The elbow of an inertia curve indexed from k=1: the point farthest below the chord."""
    curve = np.asarray(inertias, dtype=np.float64)
    if len(curve) < 3 or curve[0] <= curve[-1]:
        return 1 if len(curve) < 2 or curve[0] <= curve[-1] else len(curve)
    x = np.linspace(0.0, 1.0, len(curve))
    y = (curve - curve[-1]) / (curve[0] - curve[-1])
    return int(np.argmax((1.0 - x) - y)) + 1


def _kmeans_1d(values: np.ndarray, seed: int) -> tuple[np.ndarray, DimensionFit]:
    from sklearn.cluster import KMeans

    x = values.reshape(-1, 1)
    distinct = len(np.unique(values))
    fits, inertias = [], []
    for k in range(1, min(K_MAX, distinct) + 1):
        model = KMeans(n_clusters=k, n_init=4, random_state=seed).fit(x)
        fits.append(model)
        inertias.append(float(model.inertia_))
    k = elbow_k(inertias) if inertias else 1
    model = fits[k - 1] if fits else None
    if model is None:
        return np.zeros(len(values), dtype=np.int64), DimensionFit(1, [float(values.mean())], [])
    order = np.argsort(model.cluster_centers_.ravel())
    rank = np.empty(k, dtype=np.int64)
    rank[order] = np.arange(k)
    return rank[model.labels_], DimensionFit(k, sorted(model.cluster_centers_.ravel().tolist()), inertias)


def rfm_tiers(frame: pd.DataFrame, seed: int = 0) -> tuple[pd.DataFrame, dict[str, DimensionFit]]:
    """Scores and tiers for customers with (customer_id, recency, frequency, monetary).

    Returns the frame with ``<dimension>_score`` (0..1), ``rfm_score`` (0..3) and ``tier``, and the fit of
    each dimension (k, centres, inertia curve). Frequency and monetary are clustered on log1p.
    """
    out = frame.copy()
    fits = {}
    total = np.zeros(len(out))
    for name, direction in DIMENSIONS.items():
        values = out[name].to_numpy(dtype=np.float64)
        values = np.log1p(np.maximum(values, 0.0))
        rank, fit = _kmeans_1d(values, seed) if len(values) else (np.zeros(0, dtype=np.int64), DimensionFit(1, [], []))
        score = rank / max(fit.k - 1, 1)
        if direction < 0:
            score = 1.0 - score if fit.k > 1 else score
        out[f"{name}_score"] = score
        total += score
        fits[name] = fit
    out["rfm_score"] = total
    out["tier"] = np.asarray(TIERS, dtype=object)[np.minimum(total.astype(np.int64), 2)]
    return out, fits


def tiers_from_features(features: pd.DataFrame, seed: int = 0) -> tuple[pd.DataFrame, dict[str, DimensionFit]]:
    """:func:`rfm_tiers` of the customers who ordered, from customer feature rows as of a date.

    ``features``: ``customer_id``, ``customer_has_ordered`` and the :data:`FEATURE_COLUMNS`, one row per
    customer. Customers who never ordered have no tier; the result is sorted by ``customer_id``.
    """
    frame = features[features["customer_has_ordered"] > 0]
    frame = frame[["customer_id", *FEATURE_COLUMNS.values()]].rename(columns={v: k for k, v in FEATURE_COLUMNS.items()})
    return rfm_tiers(frame.sort_values("customer_id").reset_index(drop=True), seed=seed)
