"""Pure segment functions: L1 assignment, k-distance eps, DBSCAN discovery, id matching, RFM tiers."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from include.preference.segments.assign import nearest_l1, nearest_l1_broadcast
from include.preference.segments.cluster import NOISE, discover, k_distance_eps, match_ids
from include.preference.segments.rfm import elbow_k, rfm_tiers

pytestmark = pytest.mark.unit


def test_blockwise_l1_assignment_equals_the_broadcast_version():
    rng = np.random.default_rng(3)
    points = rng.normal(size=(5_003, 16)).astype(np.float32)
    centroids = rng.normal(size=(7, 16)).astype(np.float32)
    index, distance = nearest_l1(points, centroids, block=1000)
    expected_index, expected_distance = nearest_l1_broadcast(points, centroids)
    np.testing.assert_array_equal(index, expected_index)
    np.testing.assert_allclose(distance, expected_distance, rtol=1e-5)
    # L1, not L2: (2, 0) is nearer to (3.2, 1.1) in L2 (1.63 < 2) but nearer to (0, 0) in L1 (2 < 2.3).
    point = np.array([[2.0, 0.0]], dtype=np.float32)
    pair = np.array([[0.0, 0.0], [3.2, 1.1]], dtype=np.float32)
    assert np.linalg.norm(point - pair, axis=1).argmin() == 1
    assert nearest_l1(point, pair)[0][0] == 0


def test_assignment_rejects_mismatched_widths():
    with pytest.raises(ValueError, match="equal widths"):
        nearest_l1(np.zeros((3, 4), np.float32), np.zeros((2, 5), np.float32))


def _blobs(rng, centres, per, spread=0.3):
    points = np.concatenate([rng.normal(c, spread, size=(per, len(c))) for c in centres])
    labels = np.repeat(np.arange(len(centres)), per)
    return points.astype(np.float32), labels


def test_discovery_recovers_separated_groups():
    from sklearn.metrics import adjusted_rand_score

    rng = np.random.default_rng(0)
    centres = rng.normal(0, 4, size=(4, 12))
    points, truth = _blobs(rng, centres, 80)
    found = discover(points, seed=0)
    members = found.labels != NOISE
    assert found.noise_share < 0.2
    assert adjusted_rand_score(truth[members], found.labels[members]) > 0.9
    assert len(found.cluster_ids) == 4 and found.centroids.shape == (4, 12)
    assert found.silhouette is not None and found.silhouette > 0.5


def test_k_distance_eps_lies_between_within_and_between_cluster_distances():
    rng = np.random.default_rng(1)
    points, _ = _blobs(rng, [[0, 0], [20, 0], [0, 20]], 100, spread=0.5)
    eps = k_distance_eps(points, 5)
    assert 0.05 < eps < 10.0


def test_matching_keeps_ids_of_permuted_and_moved_centroids_and_numbers_new_ones():
    rng = np.random.default_rng(2)
    previous = rng.normal(0, 5, size=(3, 8))
    previous_ids = np.array([4, 7, 9])
    current = previous[[2, 0, 1]] + rng.normal(0, 0.1, size=(3, 8))
    assert match_ids(previous, previous_ids, current).tolist() == [9, 4, 7]
    grown = np.concatenate([current, rng.normal(30, 1, size=(1, 8))])
    assert match_ids(previous, previous_ids, grown).tolist() == [9, 4, 7, 10]
    assert match_ids(np.zeros((0, 8)), np.zeros(0, np.int64), current).tolist() == [0, 1, 2]


def test_elbow_of_an_inertia_curve():
    assert elbow_k([100.0, 40.0, 12.0, 10.0, 9.0, 8.5]) == 3
    assert elbow_k([10.0]) == 1


def test_rfm_tiers_order_customers_by_value():
    rng = np.random.default_rng(4)
    n = 300
    good = pd.DataFrame(
        {"recency": rng.integers(1, 10, n), "frequency": rng.integers(20, 40, n), "monetary": rng.uniform(5e3, 9e3, n)}
    )
    poor = pd.DataFrame(
        {"recency": rng.integers(200, 300, n), "frequency": rng.integers(1, 2, n), "monetary": rng.uniform(5, 20, n)}
    )
    frame = pd.concat([good, poor], ignore_index=True).assign(customer_id=[f"c{i}" for i in range(2 * n)])
    scored, fits = rfm_tiers(frame, seed=0)
    assert set(scored["tier"][:n]) == {"high"} and set(scored["tier"][n:]) == {"low"}
    assert all(2 <= fit.k <= 8 for fit in fits.values())
    assert scored["rfm_score"].between(0, 3).all()
