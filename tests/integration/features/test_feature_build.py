"""The Spark feature job on five weeks of validated synthetic days: incremental = full, no leakage.

Reference values are computed here with pandas straight from the validated files, independently
of the Spark code.
"""

from __future__ import annotations

import datetime as dt
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

from include.preference.features import spec
from include.preference.features.build import build_features, partition_dir
from tests.integration.features.conftest import LAST, TABLES, copy_validated, read

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def validated(root: Path, table: str, days: list[dt.date]) -> pd.DataFrame:
    return pd.concat([pq.read_table(partition_dir(root, "validated", table, d)).to_pandas() for d in days])


def test_incremental_days_equal_a_full_recompute_exactly(chain):
    root, full_root, days, runs = chain
    assert [r.mode for r in runs] == ["full"] + ["incremental"] * (LAST - 27)
    # Days leave the 7- and 30-day windows along the way: the chain really subtracts.
    expired = {name for r in runs for name in r.expired_days}
    assert f"daily_customers/{days[0]}" in expired and f"daily_products/{days[LAST - 7]}" in expired
    for table in TABLES:
        incremental, full = read(root, table, days[LAST]), read(full_root, table, days[LAST])
        assert len(incremental) > 0, table
        pd.testing.assert_frame_equal(incremental, full, check_exact=True, obj=table)


def test_features_match_an_independent_pandas_computation(chain):
    root, _, days, _ = chain
    day = days[LAST]
    customers = read(root, "customers", day).set_index("customer_id")
    products = read(root, "products", day).set_index("product_id")
    events = validated(root, "events", days[: LAST + 1])
    orders = validated(root, "orders", days[: LAST + 1])
    events["day"] = events["event_time"].dt.date
    orders["day"] = orders["order_time"].dt.date

    last_week = events[(events["day"] > day - dt.timedelta(days=7)) & (events["event_type"] == "view")]
    views_7d = last_week.groupby("customer_id").size()
    np.testing.assert_array_equal(
        customers["customer_views_7d"].reindex(views_7d.index).to_numpy(), views_7d.to_numpy("float32")
    )
    assert customers.loc[~customers.index.isin(views_7d.index), "customer_views_7d"].eq(0).all()

    revenue = (orders["unit_price"].mul(100).round() * orders["quantity"]).groupby(orders["customer_id"]).sum() / 100
    np.testing.assert_allclose(
        customers["customer_monetary"].reindex(revenue.index).to_numpy(), revenue.to_numpy(), rtol=1e-6
    )
    recency = orders.groupby("customer_id")["day"].max().map(lambda d: (day - d).days)
    np.testing.assert_array_equal(
        customers["customer_recency_days"].reindex(recency.index).to_numpy(), recency.to_numpy("float32")
    )
    never = ~customers.index.isin(recency.index)
    assert never.any() and (customers.loc[never, "customer_recency_days"] == spec.NEVER_DAYS).all()

    buyers = orders.groupby("product_id")["customer_id"].nunique()
    catalogue = products.index.intersection(buyers.index)
    assert len(catalogue) > 10
    np.testing.assert_array_equal(
        products.loc[catalogue, "product_buyers"].to_numpy(), buyers[catalogue].to_numpy("float32")
    )

    catalogue_today = pq.read_table(partition_dir(root, "validated", "products", day)).to_pandas()
    assert set(products.index) == set(catalogue_today["product_id"])
    top = catalogue_today.set_index("product_id")["category_path"].str.split("/").str[0]
    assert (products["product_top_category"].to_numpy() == top.reindex(products.index).to_numpy()).all()


def test_every_numeric_feature_is_finite_and_categoricals_are_filled(chain):
    root, _, days, _ = chain
    for table, entity in (("customers", "customer"), ("products", "product")):
        frame = read(root, table, days[LAST])
        numeric = frame[list(spec.numeric_names(entity))].to_numpy()
        assert np.isfinite(numeric).all(), table
        for name in spec.categorical_names(entity):
            assert frame[name].notna().all() and (frame[name] != "").all(), name


def _alter_the_future(root: Path, days: list[dt.date], cut: int) -> None:
    """Remove, change and add data dated after days[cut]."""
    shutil.rmtree(partition_dir(root, "validated", "orders", days[cut + 1]).parent / f"dt={days[cut + 1]}")
    for table in ("events", "products", "customers"):
        shutil.rmtree(partition_dir(root, "validated", table, days[cut + 1]))
    changed = partition_dir(root, "validated", "events", days[cut + 2]) / "part-00000.parquet"
    frame = pq.read_table(changed).to_pandas()
    frame["event_type"] = "purchase"
    frame.to_parquet(changed, index=False)
    later = days[-1] + dt.timedelta(days=30)
    for table in ("events", "orders", "products", "customers"):
        shutil.copytree(
            partition_dir(root, "validated", table, days[cut + 3]), partition_dir(root, "validated", table, later)
        )


def test_features_as_of_a_day_ignore_any_change_after_it(validated_history, spark, tmp_path):
    source, days = validated_history
    cut = 20
    clean = copy_validated(source, tmp_path / "clean")
    build_features(spark, clean, days[cut], mode="full")
    altered = copy_validated(source, tmp_path / "altered")
    _alter_the_future(altered, days, cut)
    build_features(spark, altered, days[cut], mode="full")
    # The incremental path too: start from the day before, then fold the cut day.
    stepwise = copy_validated(source, tmp_path / "stepwise")
    _alter_the_future(stepwise, days, cut)
    build_features(spark, stepwise, days[cut - 1], mode="full")
    assert build_features(spark, stepwise, days[cut]).mode == "incremental"
    for table in TABLES:
        reference = read(clean, table, days[cut])
        pd.testing.assert_frame_equal(read(altered, table, days[cut]), reference, check_exact=True, obj=table)
        pd.testing.assert_frame_equal(read(stepwise, table, days[cut]), reference, check_exact=True, obj=table)
