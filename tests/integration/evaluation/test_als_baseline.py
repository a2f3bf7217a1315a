"""The ALS baseline (Spark MLlib, implicit feedback) learns co-purchase structure."""

from __future__ import annotations

import datetime as dt

import pandas as pd
import pytest

from include.preference.evaluation.baselines import als

pytestmark = [pytest.mark.integration]


def test_als_recommends_what_similar_customers_bought_and_skips_unknown_customers(spark):
    day = dt.date(2025, 1, 1)
    rows = []
    # Two groups buy two disjoint product sets; the last customer of each group has bought only
    # half of its group's products.
    for group, products in (("a", [f"a{i}" for i in range(6)]), ("b", [f"b{i}" for i in range(6)])):
        for customer in range(8):
            owned = products[:3] if customer == 7 else products
            rows += [(f"{group}-c{customer}", p, day) for p in owned]
    purchases = pd.DataFrame(rows, columns=["customer_id", "product_id", "day"])
    recs = als(spark, purchases, ["a-c7", "b-c7", "newcomer"], day, k=6)
    assert set(recs.customer_id) == {"a-c7", "b-c7"}
    for customer, prefix in (("a-c7", "a"), ("b-c7", "b")):
        top = recs[recs.customer_id == customer].sort_values("rank").product_id.head(6).tolist()
        assert all(p.startswith(prefix) for p in top), top
        assert recs[recs.customer_id == customer]["rank"].tolist() == list(range(1, 7))
