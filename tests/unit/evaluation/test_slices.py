"""Evaluation slices: RFM value tiers as compute_rfm gives them, new vs returning by tenure."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from include.preference.evaluation.slices import NEW_CUSTOMER_DAYS, customer_slices

pytestmark = pytest.mark.unit


def features(n: int = 120) -> pd.DataFrame:
    """Customer feature rows: n valuable customers, n poor ones, two who never ordered."""
    rng = np.random.default_rng(3)
    good = pd.DataFrame(
        {
            "customer_recency_days": rng.integers(1, 10, n).astype(float),
            "customer_frequency": rng.integers(20, 40, n).astype(float),
            "customer_monetary": rng.uniform(5e3, 9e3, n),
        }
    )
    poor = pd.DataFrame(
        {
            "customer_recency_days": rng.integers(200, 300, n).astype(float),
            "customer_frequency": np.ones(n),
            "customer_monetary": rng.uniform(5, 20, n),
        }
    )
    never = pd.DataFrame({"customer_recency_days": [3650.0] * 2, "customer_frequency": 0.0, "customer_monetary": 0.0})
    frame = pd.concat([good, poor, never], ignore_index=True)
    frame["customer_id"] = [f"c{i:03d}" for i in range(len(frame))]
    frame["customer_has_ordered"] = np.r_[np.ones(2 * n), np.zeros(2)]
    frame["customer_tenure_days"] = np.where(np.arange(len(frame)) % 2 == 0, 400.0, 30.0)
    frame.loc[0, "customer_tenure_days"] = float(NEW_CUSTOMER_DAYS)
    return frame


def test_value_tiers_follow_rfm_and_customers_who_never_ordered_have_none():
    frame = features()
    # One row per scored product: the same customer repeated must be read once.
    repeated = pd.concat([frame, frame.iloc[:50]], ignore_index=True).assign(product_id="p")
    slices = customer_slices(repeated)
    tiers = slices["value_tier"]
    assert len(tiers) == len(frame) and tiers.index.is_unique
    assert set(tiers[[f"c{i:03d}" for i in range(120)]]) == {"high"}
    assert set(tiers[[f"c{i:03d}" for i in range(120, 240)]]) == {"low"}
    assert list(tiers[["c240", "c241"]]) == ["none", "none"]


def test_new_customers_are_first_seen_within_the_window():
    slices = customer_slices(features())["new_vs_returning"]
    assert slices["c000"] == "new"  # exactly NEW_CUSTOMER_DAYS
    assert slices["c002"] == "returning" and slices["c001"] == "new"
    assert set(slices) == {"new", "returning"}


def test_missing_feature_columns_are_named():
    with pytest.raises(ValueError, match="customer_tenure_days"):
        customer_slices(features().drop(columns="customer_tenure_days"))
