"""Nearest centroid by L1 distance, vectorized: the daily re-assignment of every customer and product.

For each block of rows, the distance to one centroid at a time is ``|X - c|`` summed over the
embedding dimensions (one pass over the block per centroid, no rows x centroids x dims tensor), and
the running minimum keeps the nearest. Blocks stay in cache; the cost is rows x centroids x dims.
"""

from __future__ import annotations

import numpy as np

BLOCK_ROWS = 16_384


SPACES = ("taste", "profile")


def segment_space(embeddings: np.ndarray, space: str = "taste") -> np.ndarray:
    """Where segments live: the taste part of a model embedding (its first ``TASTE_DIM`` columns,
    see :mod:`include.preference.model`), scaled to unit length; or, with ``space="profile"``, a
    customer profile (:mod:`include.preference.profiles`, every column), scaled to unit length.

    Taste segments group customers (and products) by what they like; how much they buy is what the
    RFM value tiers describe. Unit length keeps the direction of a vector and drops its strength.
    """
    from include.preference.model import TASTE_DIM

    if space not in SPACES:
        raise ValueError(f"unknown segment space {space!r}; expected one of {', '.join(SPACES)}")
    embeddings = np.asarray(embeddings, dtype=np.float32)
    width = TASTE_DIM if space == "taste" else 1
    if embeddings.ndim != 2 or embeddings.shape[1] < width:
        raise ValueError(f"embeddings must have at least {width} columns, got shape {embeddings.shape}")
    taste = embeddings[:, :TASTE_DIM] if space == "taste" else embeddings
    norms = np.linalg.norm(taste, axis=1, keepdims=True)
    return np.divide(taste, norms, out=np.zeros_like(taste), where=norms > 0)


def nearest_l1(points: np.ndarray, centroids: np.ndarray, block: int = BLOCK_ROWS) -> tuple[np.ndarray, np.ndarray]:
    """(index of the nearest centroid, its L1 distance) for every row of ``points``.

    Ties go to the lower centroid index.
    """
    points = np.asarray(points, dtype=np.float32)
    centroids = np.asarray(centroids, dtype=np.float32)
    if points.ndim != 2 or centroids.ndim != 2 or points.shape[1] != centroids.shape[1]:
        raise ValueError(f"points {points.shape} and centroids {centroids.shape} must be 2-D with equal widths")
    if not len(centroids):
        raise ValueError("no centroids to assign to")
    rows = len(points)
    best = np.zeros(rows, dtype=np.int32)
    best_distance = np.full(rows, np.inf, dtype=np.float32)
    scratch = np.empty((min(block, max(rows, 1)), points.shape[1]), dtype=np.float32)
    for start in range(0, rows, block):
        chunk = points[start : start + block]
        work = scratch[: len(chunk)]
        nearest = best[start : start + block]
        distance = best_distance[start : start + block]
        for index, centroid in enumerate(centroids):
            np.subtract(chunk, centroid, out=work)
            np.abs(work, out=work)
            d = work.sum(axis=1)
            closer = d < distance
            nearest[closer] = index
            distance[closer] = d[closer]
    return best, best_distance


def nearest_l1_broadcast(points: np.ndarray, centroids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The textbook numpy version (a rows x centroids x dims temporary), for comparison and tests."""
    distances = np.abs(points[:, None, :] - centroids[None, :, :]).sum(axis=2)
    index = distances.argmin(axis=1)
    return index.astype(np.int32), distances[np.arange(len(points)), index].astype(np.float32)
