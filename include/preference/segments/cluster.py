"""Cluster discovery on a sample of embeddings (pure functions, numpy and scikit-learn).

1. t-SNE maps the sample's embeddings to two dimensions;
2. DBSCAN clusters the map with ``min_samples`` = 2 x the map's dimensions (the usual rule of
   Sander et al., 1998: 4 on a 2-D map) and ``eps`` read off the k-distance curve (the distance of
   each point to its ``min_samples``-th neighbour, sorted: eps is where the curve bends most, the
   point farthest from the chord between its ends) instead of hand-tuned values;
3. centroids are the mean embeddings of each cluster's members, in embedding space, so that every
   customer or product (not only the sample) can later be assigned by distance;
4. quality: silhouette and Davies-Bouldin of the clustered members, in embedding space;
5. when centroids are refreshed, new clusters are matched to the previous ones (Hungarian
   assignment on L1 distance between centroids) so that cluster ids stay stable across refreshes.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

NOISE = -1


@dataclass(frozen=True)
class Clustering:
    """The outcome of one discovery."""

    map2d: np.ndarray  # sample rows x 2 (t-SNE)
    labels: np.ndarray  # sample rows, cluster ids from 0, NOISE for DBSCAN noise
    centroids: np.ndarray  # clusters x embedding dim (mean of members' embeddings)
    cluster_ids: np.ndarray  # id of each centroid row
    eps: float
    min_samples: int
    silhouette: float | None
    davies_bouldin: float | None

    @property
    def noise_share(self) -> float:
        return float(np.mean(self.labels == NOISE)) if len(self.labels) else 0.0


def tsne_map(embeddings: np.ndarray, seed: int = 0) -> np.ndarray:
    """A deterministic 2-D t-SNE map (perplexity suited to the sample size)."""
    from sklearn.manifold import TSNE

    rows = len(embeddings)
    if rows < 5:
        raise ValueError(f"t-SNE needs at least 5 rows, got {rows}")
    perplexity = float(min(30.0, max(5.0, (rows - 1) / 4)))
    return TSNE(n_components=2, perplexity=perplexity, init="pca", random_state=seed).fit_transform(
        np.asarray(embeddings, dtype=np.float64)
    )


def k_distance_eps(points: np.ndarray, min_samples: int) -> float:
    """DBSCAN's eps from the knee of the sorted k-distance curve (k = ``min_samples``)."""
    from sklearn.neighbors import NearestNeighbors

    k = min(min_samples, len(points) - 1)
    distances, _ = NearestNeighbors(n_neighbors=k + 1).fit(points).kneighbors(points)
    curve = np.sort(distances[:, -1])
    x = np.linspace(0.0, 1.0, len(curve))
    span = curve[-1] - curve[0]
    if span <= 0:
        return float(curve[-1]) or 1e-6
    y = (curve - curve[0]) / span
    # Distance below the chord from (0, 0) to (1, 1): largest where the curve bends upwards.
    knee = int(np.argmax(x - y))
    # Many identical points give a zero distance at the knee: take the first positive one.
    positive = curve[curve > 0]
    return float(max(curve[knee], positive[0] if len(positive) else 1e-6))


def discover(embeddings: np.ndarray, seed: int = 0, min_samples: int | None = None) -> Clustering:
    """t-SNE, then DBSCAN with the k-distance eps, then centroids and quality in embedding space."""
    from sklearn.cluster import DBSCAN

    embeddings = np.asarray(embeddings, dtype=np.float32)
    map2d = tsne_map(embeddings, seed)
    min_samples = min_samples or 2 * map2d.shape[1]
    eps = k_distance_eps(map2d, min_samples)
    labels = DBSCAN(eps=eps, min_samples=min_samples).fit_predict(map2d)
    ids = np.array(sorted(set(labels.tolist()) - {NOISE}), dtype=np.int64)
    if not len(ids):  # one dense blob: everyone in one cluster
        labels = np.zeros(len(embeddings), dtype=np.int64)
        ids = np.array([0])
    centroids = np.stack([embeddings[labels == i].mean(axis=0) for i in ids]).astype(np.float32)
    silhouette, davies_bouldin = quality(embeddings, labels)
    return Clustering(map2d, labels, centroids, ids, eps, min_samples, silhouette, davies_bouldin)


def quality(embeddings: np.ndarray, labels: np.ndarray) -> tuple[float | None, float | None]:
    """Silhouette and Davies-Bouldin of the clustered rows (noise left out); None for one cluster."""
    from sklearn.metrics import davies_bouldin_score, silhouette_score

    members = labels != NOISE
    if len(set(labels[members].tolist())) < 2:
        return None, None
    x, y = embeddings[members], labels[members]
    return float(silhouette_score(x, y, metric="manhattan")), float(davies_bouldin_score(x, y))


def match_ids(previous: np.ndarray, previous_ids: np.ndarray, current: np.ndarray) -> np.ndarray:
    """Ids for the ``current`` centroids: the matched previous id, or a new id after the largest.

    Hungarian assignment (``scipy.optimize.linear_sum_assignment``) on the L1 distance between
    centroids, so a refresh that finds the same clusters keeps their ids.
    """
    from scipy.optimize import linear_sum_assignment

    ids = np.full(len(current), -1, dtype=np.int64)
    if len(previous) and len(current) and previous.shape[1] == current.shape[1]:
        cost = np.abs(current[:, None, :] - previous[None, :, :]).sum(axis=2)
        rows, cols = linear_sum_assignment(cost)
        ids[rows] = np.asarray(previous_ids)[cols]
    next_id = int(max(previous_ids, default=-1)) + 1 if len(previous_ids) else 0
    for row in np.flatnonzero(ids < 0):
        ids[row] = next_id
        next_id += 1
    return ids
