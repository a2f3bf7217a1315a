"""The Spark feature job on five weeks of validated synthetic days: incremental = full, no leakage.

Reference values are computed here with pandas straight from the validated files, independently
of the Spark code.
"""

from __future__ import annotations

import datetime as dt
import io

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

from include.preference.features import spec
from include.preference.features.build import build_features
from include.preference.storage import PartitionRef
from include.preference.storage.spark_lake import SparkLake
from tests.integration.features.conftest import LAST, TABLES, read
from tests.support.lake import clone

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def validated(lake: SparkLake, table: str, days: list[dt.date]) -> pd.DataFrame:
    return pd.concat([lake.read_arrow(PartitionRef("validated", table, d)).to_pandas() for d in days])


def test_incremental_days_equal_a_full_recompute_exactly(chain):
    lake, full, days, runs = chain
    assert [r.mode for r in runs] == ["full"] + ["incremental"] * (LAST - 27)
    # Days leave the 7- and 30-day windows along the way: the chain really subtracts.
    expired = {name for r in runs for name in r.expired_days}
    assert f"daily_customers/{days[0]}" in expired and f"daily_products/{days[LAST - 7]}" in expired
    for table in TABLES:
        incremental, full_build = read(lake, table, days[LAST]), read(full, table, days[LAST])
        assert len(incremental) > 0, table
        pd.testing.assert_frame_equal(incremental, full_build, check_exact=True, obj=table)


def test_features_match_an_independent_pandas_computation(chain):
    lake, _, days, _ = chain
    day = days[LAST]
    customers = read(lake, "customers", day).set_index("customer_id")
    products = read(lake, "products", day).set_index("product_id")
    events = validated(lake, "events", days[: LAST + 1])
    orders = validated(lake, "orders", days[: LAST + 1])
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

    catalogue_today = lake.read_arrow(PartitionRef("validated", "products", day)).to_pandas()
    assert set(products.index) == set(catalogue_today["product_id"])
    top = catalogue_today.set_index("product_id")["category_path"].str.split("/").str[0]
    assert (products["product_top_category"].to_numpy() == top.reindex(products.index).to_numpy()).all()


def test_repurchase_features_match_an_independent_pandas_computation(chain, spark):
    """Order days, first order, the mean interval between order days and how due the next one is
    (against the pair's own interval, the customer's median and the product's median), from the
    validated orders up to the day."""
    from include.preference.features.build import feature_ref, pair_features

    lake, _, days, _ = chain
    day = days[LAST]
    orders = validated(lake, "orders", days[: LAST + 1])
    orders["day"] = orders["order_time"].dt.date
    per_pair = orders.groupby(["customer_id", "product_id"])["day"].agg(["min", "max", "nunique"]).reset_index()
    per_pair["gap"] = [
        (last - first).days / (n - 1) if n >= 2 else np.nan
        for first, last, n in zip(per_pair["min"], per_pair["max"], per_pair["nunique"], strict=True)
    ]
    assert (per_pair["nunique"] >= 2).sum() > 20  # the synthetic world has repeat buyers

    def lower_median(values: pd.Series) -> float:  # percentile_approx(0.5): the lower middle element
        ordered = np.sort(values.dropna().to_numpy())
        return float(ordered[int(np.ceil(0.5 * len(ordered))) - 1]) if len(ordered) else np.nan

    customer_gap = per_pair.groupby("customer_id")["gap"].agg(lower_median)
    product_gap = per_pair.groupby("product_id")["gap"].agg(lower_median)
    never = pd.DataFrame({"customer_id": [per_pair["customer_id"].iloc[0]], "product_id": ["P-never-ordered"]})
    candidates = pd.concat([per_pair[["customer_id", "product_id"]], never], ignore_index=True)

    tables = {t: lake.need(spark, feature_ref(t, day), "the chain built it") for t in FEATURE_INPUTS}
    computed = pair_features(
        spark.createDataFrame(candidates),
        tables["state_pairs"],
        tables["state_customer_categories"],
        tables["customers"],
        tables["products"],
        day,
    ).toPandas()
    got = candidates.merge(computed, on=["customer_id", "product_id"], how="left")
    mine = got.iloc[: len(per_pair)]
    since = np.array([(day - d).days for d in per_pair["max"]], dtype=float)

    def due(gap: pd.Series | np.ndarray) -> np.ndarray:
        gap = np.asarray(gap, dtype=float)
        return np.where(np.isfinite(gap) & (gap > 0), since / np.where(gap > 0, gap, 1.0), 0.0)

    np.testing.assert_array_equal(mine["pair_order_days"], per_pair["nunique"].to_numpy("float32"))
    first = np.array([(day - d).days for d in per_pair["min"]], dtype="float32")
    np.testing.assert_array_equal(mine["pair_days_since_first_order"], first)
    expected_gap = per_pair["gap"].fillna(spec.NEVER_DAYS).to_numpy("float32")
    np.testing.assert_allclose(mine["pair_repurchase_interval"], expected_gap, rtol=1e-6)
    np.testing.assert_allclose(mine["pair_repurchase_due"], due(per_pair["gap"]), rtol=1e-5)
    np.testing.assert_allclose(
        mine["pair_customer_repurchase_due"], due(per_pair["customer_id"].map(customer_gap)), rtol=1e-5
    )
    np.testing.assert_allclose(
        mine["pair_product_repurchase_due"], due(per_pair["product_id"].map(product_gap)), rtol=1e-5
    )
    unseen = got.iloc[-1]
    assert unseen["pair_order_days"] == 0 and unseen["pair_repurchase_interval"] == spec.NEVER_DAYS
    assert unseen["pair_repurchase_due"] == unseen["pair_customer_repurchase_due"] == 0.0


FEATURE_INPUTS = ("state_pairs", "state_customer_categories", "customers", "products")


def test_every_numeric_feature_is_finite_and_categoricals_are_filled(chain):
    lake, _, days, _ = chain
    for table, entity in (("customers", "customer"), ("products", "product")):
        frame = read(lake, table, days[LAST])
        numeric = frame[list(spec.numeric_names(entity))].to_numpy()
        assert np.isfinite(numeric).all(), table
        for name in spec.categorical_names(entity):
            assert frame[name].notna().all() and (frame[name] != "").all(), name


def _alter_the_future(lake: SparkLake, days: list[dt.date], cut: int) -> None:
    """Remove, change and add data dated after days[cut]."""
    store = lake.store
    for table in ("orders", "events", "products", "customers"):
        store.delete_keys(
            [o.key for o in store.list_objects(lake.prefix(PartitionRef("validated", table, days[cut + 1])))]
        )
    changed = lake.prefix(PartitionRef("validated", "events", days[cut + 2])) + "part-00000.parquet"
    frame = pq.read_table(io.BytesIO(store.get_bytes(changed))).to_pandas()
    frame["event_type"] = "purchase"
    buffer = io.BytesIO()
    frame.to_parquet(buffer, index=False)
    store.put_bytes(changed, buffer.getvalue())
    later = days[-1] + dt.timedelta(days=30)
    for table in ("events", "orders", "products", "customers"):
        source = lake.prefix(PartitionRef("validated", table, days[cut + 3]))
        target = lake.prefix(PartitionRef("validated", table, later))
        for info in store.list_objects(source):
            store.copy(info.key, target + info.key[len(source) :])


def test_features_as_of_a_day_ignore_any_change_after_it(validated_history, spark):
    source, days = validated_history
    cut = 20
    clean = clone(source, "clean")
    build_features(spark, clean, days[cut], mode="full")
    altered = clone(source, "altered")
    _alter_the_future(altered, days, cut)
    build_features(spark, altered, days[cut], mode="full")
    # The incremental path too: start from the day before, then fold the cut day.
    stepwise = clone(source, "stepwise")
    _alter_the_future(stepwise, days, cut)
    build_features(spark, stepwise, days[cut - 1], mode="full")
    assert build_features(spark, stepwise, days[cut]).mode == "incremental"
    for table in TABLES:
        reference = read(clean, table, days[cut])
        pd.testing.assert_frame_equal(read(altered, table, days[cut]), reference, check_exact=True, obj=table)
        pd.testing.assert_frame_equal(read(stepwise, table, days[cut]), reference, check_exact=True, obj=table)
