"""The feature job: from validated partitions to point-in-time features, in Spark.

It reads and writes through a :class:`SparkLake`: the task registers the published partitions it
needs, the job writes its tables to the lake's work area, and the task publishes them from there.
Tests and the evaluation fill a work area directly, so the same code runs in every one of them.

Outputs of :func:`build_features` for day D (tables under ``features/``):

* ``daily_<aggregate>``: the day's aggregates (read back when the day expires from a window);
* ``state_<aggregate>``: window and all-time sums as of D (the next day's starting point);
* ``customers`` and ``products``: the spec's features as of D, one row per customer / product.
"""

from __future__ import annotations

import datetime as dt
import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING

from include.preference.features import spec
from include.preference.features.aggregates import (
    AGGREGATES,
    CUSTOMER_CATEGORIES,
    CUSTOMERS,
    DAY,
    PAIRS,
    PRODUCTS,
    Aggregate,
    daily_aggregates,
    fold_full,
    fold_incremental,
    top_category,
)
from include.preference.storage.partitions import PartitionRef
from include.preference.storage.spark_lake import SparkLake

if TYPE_CHECKING:
    from pyspark.sql import Column, DataFrame, SparkSession

log = logging.getLogger(__name__)

FEATURE_LAYER = "features"
SOURCE_TABLES = ("events", "orders", "products", "customers")


def feature_ref(table: str, day: dt.date) -> PartitionRef:
    return PartitionRef(FEATURE_LAYER, table, day)


@dataclass(frozen=True)
class FeatureRun:
    """What a feature build did: its mode and the row counts it wrote, by table."""

    day: dt.date
    mode: str
    rows: dict[str, int]
    expired_days: tuple[str, ...] = ()


def _snapshot(spark: "SparkSession", lake: SparkLake, table: str, day: dt.date) -> "DataFrame":
    return lake.need(spark, PartitionRef("validated", table, day), "the feature build needs the day's snapshot")


def _day_inputs(spark: "SparkSession", lake: SparkLake, days: list[dt.date]) -> tuple["DataFrame", ...]:
    """Events, orders and per-day catalogue of the given days."""
    return (
        lake.read_days(spark, "validated", "events", days),
        lake.read_days(spark, "validated", "orders", days),
        lake.read_days(spark, "validated", "products", days, with_day=True),
    )


def daily_for(spark: "SparkSession", lake: SparkLake, day: dt.date) -> dict[str, "DataFrame"]:
    """The daily aggregates of one day, computed from its validated partitions."""
    events, orders, products = _day_inputs(spark, lake, [day])
    return daily_aggregates(events, orders, products)


def build_features(
    spark: "SparkSession", lake: SparkLake, day: dt.date, *, mode: str = "auto", keep_dailies: bool = True
) -> FeatureRun:
    """Build the features as of ``day`` from the inputs of ``lake`` into its work area.

    Args:
        mode: ``incremental`` (needs the state of the day before and the expiring dailies staged),
            ``full`` (recompute from every staged validated day up to ``day``), or ``auto``
            (incremental when the previous state is staged, else full).
        keep_dailies: in full mode, also write the dailies of the past days still inside a window
            (what later incremental days subtract). A one-off build as of a date (an evaluation)
            does not need them.

    Returns:
        The mode used and the row counts written under ``features/`` in the work area.
    """
    from pyspark.sql import functions as F

    previous_day = day - dt.timedelta(days=1)
    has_previous = all(lake.files(feature_ref(f"state_{a.name}", previous_day)) for a in AGGREGATES)
    if mode == "auto":
        mode = "incremental" if has_previous else "full"
    rows: dict[str, int] = {}
    expired: list[str] = []
    today = {name: frame.cache() for name, frame in daily_for(spark, lake, day).items()}
    cached = list(today.values())
    if mode == "incremental":
        if not has_previous:
            raise ValueError(f"incremental build of {day} needs features/state_*/dt={previous_day} staged")
        states = {}
        for aggregate in AGGREGATES:
            expiring = {}
            for window in aggregate.windows:
                gone = day - dt.timedelta(days=window)
                expiring[window] = lake.read(spark, feature_ref(f"daily_{aggregate.name}", gone))
                if expiring[window] is not None:
                    expired.append(f"daily_{aggregate.name}/{gone}")
            previous = lake.read(spark, feature_ref(f"state_{aggregate.name}", previous_day))
            assert previous is not None
            states[aggregate.name] = fold_incremental(aggregate, previous, today[aggregate.name], expiring, day)
    elif mode == "full":
        history = lake.days("validated", "events", day)
        if day not in history:
            raise ValueError(f"full build of {day} needs validated/events/dt={day} staged")
        events, orders, products = _day_inputs(spark, lake, history)
        dailies = {name: frame.cache() for name, frame in daily_aggregates(events, orders, products).items()}
        cached += dailies.values()
        states = {a.name: fold_full(a, dailies[a.name], day) for a in AGGREGATES}
        # Later incremental days subtract the dailies of days still inside a window: write them too.
        oldest = day - dt.timedelta(days=max(spec.WINDOWS) - 1)
        for aggregate in AGGREGATES if keep_dailies else ():
            past = dailies[aggregate.name].where((F.col(DAY) >= F.lit(oldest)) & (F.col(DAY) < F.lit(day)))
            written = lake.write_days(past, FEATURE_LAYER, f"daily_{aggregate.name}", aggregate.keys)
            rows.update({f"daily_{aggregate.name}/{d}": n for d, n in written.items()})
    else:
        raise ValueError(f"unknown feature build mode {mode!r}; expected auto, incremental or full")

    for aggregate in AGGREGATES:
        daily = feature_ref(f"daily_{aggregate.name}", day)
        rows[f"daily_{aggregate.name}"] = lake.write_table(today[aggregate.name].drop(DAY), daily, aggregate.keys)
        state_ref = feature_ref(f"state_{aggregate.name}", day)
        rows[f"state_{aggregate.name}"] = lake.write_table(states[aggregate.name], state_ref, aggregate.keys)
    # Features read the state just written (short lineage, and exactly what the next day starts from).
    state = {a.name: _read_state(spark, lake, a, day) for a in AGGREGATES}
    customers = customer_features(
        state[CUSTOMERS.name], state[CUSTOMER_CATEGORIES.name], _snapshot(spark, lake, "customers", day), day
    )
    products = product_features(state[PRODUCTS.name], state[PAIRS.name], _snapshot(spark, lake, "products", day), day)
    rows["customers"] = lake.write_table(customers, feature_ref("customers", day), ["customer_id"])
    rows["products"] = lake.write_table(products, feature_ref("products", day), ["product_id"])
    for frame in cached:
        frame.unpersist()
    log.info("features as of %s (%s): %s", day, mode, rows)
    return FeatureRun(day=day, mode=mode, rows=rows, expired_days=tuple(expired))


def _read_state(spark: "SparkSession", lake: SparkLake, aggregate: Aggregate, day: dt.date) -> "DataFrame":
    return lake.need(spark, feature_ref(f"state_{aggregate.name}", day), "it was just written")


def _days_since(column: "Column", as_of: dt.date) -> "Column":
    from pyspark.sql import functions as F

    return F.coalesce(F.datediff(F.lit(as_of), column).cast("double"), F.lit(spec.NEVER_DAYS))


def _ratio(numerator: "Column", denominator: "Column") -> "Column":
    from pyspark.sql import functions as F

    return F.when(denominator > 0, numerator.cast("double") / denominator).otherwise(F.lit(0.0))


def _finish(frame: "DataFrame", key: list[str], features: tuple[spec.Feature, ...]) -> "DataFrame":
    """Select the keys and the spec's features with their dtypes and defaults."""
    from pyspark.sql import functions as F

    columns = [F.col(k) for k in key]
    for feature in features:
        if feature.kind == "numeric":
            columns.append(F.coalesce(F.col(feature.name).cast("float"), F.lit(0.0).cast("float")).alias(feature.name))
        else:
            value = F.col(feature.name).cast("string")
            columns.append(
                F.when(value.isNull() | (F.trim(value) == ""), F.lit(spec.UNKNOWN)).otherwise(value).alias(feature.name)
            )
    return frame.select(*columns)


def by_top_category(categories: "DataFrame") -> "DataFrame":
    """``state_customer_categories`` (per full category path) summed per top category."""
    from pyspark.sql import functions as F

    window = f"interactions_{spec.AFFINITY_WINDOW}d"
    return categories.groupBy("customer_id", top_category(F.col("category")).alias("top_category")).agg(
        F.sum(window).alias(window)
    )


def customer_features(
    state: "DataFrame", categories: "DataFrame", snapshot: "DataFrame", as_of: dt.date
) -> "DataFrame":
    """One row per customer (on the record or with activity) with the spec's customer features."""
    from pyspark.sql import Window
    from pyspark.sql import functions as F

    interactions = f"interactions_{spec.AFFINITY_WINDOW}d"
    per_customer = Window.partitionBy("customer_id")
    ranked = (
        by_top_category(categories)
        .withColumn(
            "rank",
            F.row_number().over(per_customer.orderBy(F.desc(interactions), "top_category")),
        )
        .withColumn("total", F.sum(interactions).over(per_customer))
    )
    top = ranked.where(F.col("rank") == 1).select(
        "customer_id",
        F.col("top_category").alias("customer_top_category"),
        _ratio(F.col(interactions), F.col("total")).alias("customer_top_category_share"),
    )
    # Shares over full category paths (the level at which tastes differ), hashed to fixed buckets.
    buckets = F.pmod(F.hash("category"), F.lit(spec.CATEGORY_BUCKETS))
    shares = (
        categories.withColumn("total", F.sum(interactions).over(per_customer))
        .withColumn("_bucket", buckets)
        .groupBy("customer_id")
        .pivot("_bucket", list(range(spec.CATEGORY_BUCKETS)))
        .agg(F.sum(_ratio(F.col(interactions), F.col("total"))))
    )
    shares = shares.select(
        "customer_id",
        *(
            F.coalesce(F.col(str(b)), F.lit(0.0)).alias(f"customer_category_share_b{b}")
            for b in range(spec.CATEGORY_BUCKETS)
        ),
    )
    record = snapshot.select("customer_id", "first_seen", "country", "age_band")
    joined = (
        record.join(state, "customer_id", "full").join(top, "customer_id", "left").join(shares, "customer_id", "left")
    )
    first = F.coalesce(F.col("first_seen"), F.col("first_day"))
    columns = {
        "customer_recency_days": _days_since(F.col("last_order_day"), as_of),
        "customer_has_ordered": F.when(F.col("last_order_day").isNotNull(), 1.0).otherwise(0.0),
        "customer_frequency": F.col("orders_all"),
        "customer_monetary": F.col("revenue_cents_all") / 100.0,
        "customer_units": F.col("units_all"),
        "customer_days_since_active": _days_since(F.col("last_active_day"), as_of),
        "customer_tenure_days": F.coalesce(F.datediff(F.lit(as_of), first).cast("double"), F.lit(0.0)),
        "customer_view_price_90d": _ratio(F.col("view_price_cents_90d"), F.col("priced_views_90d")) / 100.0,
        "customer_order_price_90d": _ratio(F.col("revenue_cents_90d"), F.col("units_90d")) / 100.0,
        "customer_country": F.col("country"),
        "customer_age_band": F.col("age_band"),
    }
    for window in spec.WINDOWS:
        for measure in ("views", "searches", "carts", "purchases", "sessions", "orders"):
            columns[f"customer_{measure}_{window}d"] = F.col(f"{measure}_{window}d")
        columns[f"customer_revenue_{window}d"] = F.col(f"revenue_cents_{window}d") / 100.0
        columns[f"customer_conversion_{window}d"] = _ratio(F.col(f"purchases_{window}d"), F.col(f"views_{window}d"))
        columns[f"customer_cart_rate_{window}d"] = _ratio(F.col(f"carts_{window}d"), F.col(f"views_{window}d"))
    frame = joined.select(
        "customer_id",
        "customer_top_category",
        "customer_top_category_share",
        *(f"customer_category_share_b{b}" for b in range(spec.CATEGORY_BUCKETS)),
        *(value.alias(name) for name, value in columns.items()),
    )
    return _finish(frame, ["customer_id"], spec.CUSTOMER_FEATURES)


def product_features(state: "DataFrame", pairs: "DataFrame", snapshot: "DataFrame", as_of: dt.date) -> "DataFrame":
    """One row per product in the day's catalogue with the spec's product features."""
    from pyspark.sql import functions as F

    buyers = (
        pairs.where(F.col("orders_all") > 0)
        .groupBy("product_id")
        .agg(
            F.count(F.lit(1)).alias("buyers"),
            F.count(F.when(F.col("last_order_day") > F.lit(as_of - dt.timedelta(days=spec.BUYER_WINDOW)), True)).alias(
                "recent_buyers"
            ),
            F.count(F.when(F.col("orders_all") >= 2, True)).alias("repeat_buyers"),
        )
    )
    catalogue = snapshot.select("product_id", "category_path", "brand", "price", "first_seen")
    joined = catalogue.join(state, "product_id", "left").join(buyers, "product_id", "left")
    columns = {
        "product_price": F.col("price"),
        "product_age_days": F.greatest(F.datediff(F.lit(as_of), F.col("first_seen")), F.lit(0)),
        "product_buyers": F.col("buyers"),
        f"product_buyers_{spec.BUYER_WINDOW}d": F.col("recent_buyers"),
        "product_repeat_share": _ratio(F.col("repeat_buyers"), F.col("buyers")),
        "product_category": F.lower(F.trim(F.col("category_path"))),
        "product_top_category": top_category(F.col("category_path")),
        "product_brand": F.col("brand"),
    }
    for window in spec.WINDOWS:
        for measure in ("views", "carts", "purchases", "units"):
            columns[f"product_{measure}_{window}d"] = F.col(f"{measure}_{window}d")
        columns[f"product_conversion_{window}d"] = _ratio(F.col(f"purchases_{window}d"), F.col(f"views_{window}d"))
    frame = joined.select("product_id", *(value.alias(name) for name, value in columns.items()))
    return _finish(frame, ["product_id"], spec.PRODUCT_FEATURES)


def pair_features(
    candidates: "DataFrame",
    pairs: "DataFrame",
    categories: "DataFrame",
    customers: "DataFrame",
    products: "DataFrame",
    as_of: dt.date,
) -> "DataFrame":
    """The spec's pair features for candidate (customer_id, product_id) rows, as of ``as_of``.

    Args:
        candidates: the pairs to describe (any pairs: never-seen ones get zeros and NEVER_DAYS).
        pairs: ``state_pairs`` as of the day.
        categories: ``state_customer_categories`` as of the day.
        customers, products: the day's customer and product features.
    """
    from pyspark.sql import functions as F

    window = f"interactions_{spec.AFFINITY_WINDOW}d"
    tops = by_top_category(categories)
    totals = tops.groupBy("customer_id").agg(F.sum(window).alias("category_total"))
    affinity = tops.join(totals, "customer_id").select(
        "customer_id",
        F.col("top_category").alias("product_top_category"),
        _ratio(F.col(window), F.col("category_total")).alias("affinity"),
    )
    # Each repeat-bought pair's mean interval between order days; its median per customer (over
    # products) and per product (over customers): how regularly this customer, and this product's
    # buyers, come back.
    elapsed = F.datediff("last_order_day", "first_order_day").cast("double")
    interval = F.try_divide(elapsed, (F.col("order_days_all") - 1).cast("double"))  # null below two days
    repeated = pairs.where(F.col("order_days_all") >= 2).select("customer_id", "product_id", interval.alias("gap"))
    customer_gap = repeated.groupBy("customer_id").agg(F.percentile_approx("gap", 0.5).alias("customer_gap"))
    product_gap = repeated.groupBy("product_id").agg(F.percentile_approx("gap", 0.5).alias("product_gap"))
    joined = (
        candidates.select("customer_id", "product_id")
        .join(pairs, ["customer_id", "product_id"], "left")
        .join(customer_gap, "customer_id", "left")
        .join(product_gap, "product_id", "left")
        .join(products.select("product_id", "product_top_category", "product_price"), "product_id", "left")
        .join(customers.select("customer_id", "customer_view_price_90d"), "customer_id", "left")
        .join(affinity, ["customer_id", "product_top_category"], "left")
    )
    since_order = F.datediff(F.lit(as_of), F.col("last_order_day")).cast("double")
    own_gap = F.when(F.col("order_days_all") >= 2, interval)

    def due(gap: "Column") -> "Column":
        ratio = F.try_divide(since_order, gap)
        return F.when(F.col("last_order_day").isNotNull() & (gap > 0), ratio).otherwise(F.lit(0.0))

    columns = {
        "pair_views": F.col("views_all"),
        "pair_carts": F.col("carts_all"),
        "pair_purchases": F.col("purchases_all"),
        "pair_units": F.col("units_all"),
        "pair_days_since_interaction": _days_since(F.col("last_interaction_day"), as_of),
        "pair_days_since_order": _days_since(F.col("last_order_day"), as_of),
        "pair_has_ordered": F.when(F.col("orders_all") > 0, 1.0).otherwise(0.0),
        "pair_category_affinity": F.col("affinity"),
        "pair_price_ratio": F.when(
            F.col("customer_view_price_90d") > 0, F.col("product_price") / F.col("customer_view_price_90d")
        ).otherwise(F.lit(1.0)),
        "pair_order_days": F.col("order_days_all"),
        "pair_days_since_first_order": _days_since(F.col("first_order_day"), as_of),
        "pair_repurchase_interval": F.coalesce(own_gap, F.lit(spec.NEVER_DAYS)),
        "pair_repurchase_due": due(own_gap),
        "pair_customer_repurchase_due": due(F.col("customer_gap")),
        "pair_product_repurchase_due": due(F.col("product_gap")),
    }
    frame = joined.select("customer_id", "product_id", *(value.alias(name) for name, value in columns.items()))
    return _finish(frame, ["customer_id", "product_id"], spec.PAIR_FEATURES)
