"""The feature job: from validated partitions to point-in-time features, in Spark.

It works on a local directory laid out like the lake (``<root>/<layer>/<table>/dt=YYYY-MM-DD/``):
the task stages the partitions it needs there and publishes what the job writes. Tests build such a
directory directly, so the same code runs with and without S3.

Outputs of :func:`build_features` for day D (tables under ``features/``):

* ``daily_<aggregate>``: the day's aggregates (read back when the day expires from a window);
* ``state_<aggregate>``: window and all-time sums as of D (the next day's starting point);
* ``customers`` and ``products``: the spec's features as of D, one row per customer / product.
"""

from __future__ import annotations

import datetime as dt
import logging
import shutil
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

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

if TYPE_CHECKING:
    from pyspark.sql import Column, DataFrame, SparkSession

log = logging.getLogger(__name__)

FEATURE_LAYER = "features"
SOURCE_TABLES = ("events", "orders", "products", "customers")
# Output files are split by key hash (the same rows always give the same files), about this big.
FILE_BYTES = 256 * 1024 * 1024
MAX_FILES = 64


def partition_dir(root: Path, layer: str, table: str, day: dt.date) -> Path:
    return root / layer / table / f"dt={day.isoformat()}"


def read_partition(spark: "SparkSession", root: Path, layer: str, table: str, day: dt.date) -> "DataFrame | None":
    """A staged partition as a DataFrame, or None when the day has none."""
    path = partition_dir(root, layer, table, day)
    if not path.is_dir() or not any(path.glob("*.parquet")):
        return None
    return spark.read.parquet(str(path))


def read_days(
    spark: "SparkSession", root: Path, layer: str, table: str, days: Iterable[dt.date], *, with_day: bool = False
) -> "DataFrame":
    """The staged partitions of ``days`` as one DataFrame (one scan), with their day as ``DAY``.

    One scan over every day's files, not a union of one read per day: a union of hundreds of scans
    costs more to plan than to run, and makes a task per file.

    Raises:
        PartitionNotFound: a day has no staged partition (named with the first missing day).
    """
    from pyspark.sql import functions as F

    from include.preference.errors import PartitionNotFound

    days = sorted(set(days))
    if not days:
        raise ValueError(f"read_days of {layer}/{table} needs at least one day")
    paths = [partition_dir(root, layer, table, day) for day in days]
    missing = [day for day, path in zip(days, paths, strict=True) if not any(path.glob("*.parquet"))]
    if missing:
        raise PartitionNotFound(
            f"{layer}/{table}/dt={missing[0]} is not staged ({len(missing)} of {len(days)} days missing)"
        )
    partition = "dt"
    frame = spark.read.option("basePath", str(root / layer / table)).parquet(*(str(p) for p in paths))
    if with_day:
        frame = frame.withColumn(DAY, F.to_date(F.col(partition).cast("string")))
    return frame.drop(partition)


def staged_days(root: Path, layer: str, table: str, until: dt.date) -> list[dt.date]:
    """Days with a staged partition of a table, up to and including ``until``."""
    base = root / layer / table
    days = [dt.date.fromisoformat(p.name[3:]) for p in base.glob("dt=*") if p.is_dir()] if base.is_dir() else []
    return sorted(d for d in days if d <= until)


def write_table(
    frame: "DataFrame", path: Path, keys: Iterable[str], files: int | None = None, order: Iterable[Any] = ()
) -> int:
    """Write ``frame`` as Parquet to ``path`` reproducibly; returns its row count.

    Rows are split into files by a hash of the keys and sorted by key inside each file, and files
    are named by their index, so the same rows always give byte-identical files. ``order`` replaces
    the key order inside files (e.g. a seeded shuffle for training examples). The number of
    files comes from the plan's size estimate (no extra Spark job to count rows first); the row
    count is read from the written files' footers.
    """
    import pyarrow.parquet as pq

    keys = list(keys)
    files = files or file_count(frame)
    if path.exists():
        shutil.rmtree(path)
    ordered = frame.repartition(files, *keys).sortWithinPartitions(*(list(order) or keys))
    ordered.write.option("compression", "zstd").parquet(str(path))
    if not any(path.glob("part-*.parquet")):
        # Spark writes no file for an empty result: keep the schema in one empty file.
        empty = frame.sparkSession.createDataFrame([], frame.schema).coalesce(1)
        empty.write.mode("overwrite").parquet(str(path))
    for produced in path.glob("part-*.parquet"):
        index = int(produced.name.split("-")[1])
        produced.rename(path / f"part-{index:05d}.parquet")
    for side in path.iterdir():
        if not side.name.startswith("part-"):
            side.unlink()
    return sum(pq.read_metadata(p).num_rows for p in path.glob("part-*.parquet"))


def file_count(frame: "DataFrame") -> int:
    """Output files for ``frame``: one per FILE_BYTES of the optimizer's size estimate, at least one."""
    try:
        estimate = int(frame._jdf.queryExecution().optimizedPlan().stats().sizeInBytes().toString())
    except Exception:  # noqa: BLE001 - an estimate only; one file is always a valid layout
        log.debug("no size estimate for the output plan; writing one file", exc_info=True)
        return 1
    return max(1, min(MAX_FILES, -(-estimate // FILE_BYTES)))


def write_daily_partitions(frame: "DataFrame", root: Path, table: str, keys: Iterable[str]) -> dict[str, int]:
    """Write a multi-day daily aggregate as one partition per day (``dt=<day>/part-00000.parquet``).

    Returns day -> rows written. One Spark job for all days; each day's rows sorted by key.
    """
    import pyarrow.parquet as pq

    keys = list(keys)
    staging = root / "_staging" / table
    if staging.exists():
        shutil.rmtree(staging)
    (
        frame.repartition(DAY)
        .sortWithinPartitions(DAY, *keys)
        .write.option("compression", "zstd")
        .partitionBy(DAY)
        .parquet(str(staging))
    )
    written: dict[str, int] = {}
    for folder in sorted(staging.glob(f"{DAY}=*")):
        day = dt.date.fromisoformat(folder.name.split("=", 1)[1])
        files = sorted(folder.glob("part-*.parquet"))
        if len(files) != 1:
            raise RuntimeError(f"expected one file for {table} {day}, Spark wrote {len(files)}")
        target = partition_dir(root, FEATURE_LAYER, table, day)
        if target.exists():
            shutil.rmtree(target)
        target.mkdir(parents=True)
        files[0].rename(target / "part-00000.parquet")
        written[day.isoformat()] = pq.read_metadata(target / "part-00000.parquet").num_rows
    shutil.rmtree(staging)
    return written


@dataclass(frozen=True)
class FeatureRun:
    """What a feature build did: its mode and the row counts it wrote, by table."""

    day: dt.date
    mode: str
    rows: dict[str, int]
    expired_days: tuple[str, ...] = ()


def _snapshot(spark: "SparkSession", root: Path, table: str, day: dt.date) -> "DataFrame":
    from include.preference.errors import PartitionNotFound

    frame = read_partition(spark, root, "validated", table, day)
    if frame is None:
        raise PartitionNotFound(f"validated/{table}/dt={day} is not staged; the feature build needs the day's snapshot")
    return frame


def _day_inputs(spark: "SparkSession", root: Path, days: list[dt.date]) -> tuple["DataFrame", ...]:
    """Events, orders and per-day catalogue of the given days."""
    return (
        read_days(spark, root, "validated", "events", days),
        read_days(spark, root, "validated", "orders", days),
        read_days(spark, root, "validated", "products", days, with_day=True),
    )


def daily_for(spark: "SparkSession", root: Path, day: dt.date) -> dict[str, "DataFrame"]:
    """The daily aggregates of one day, computed from its validated partitions."""
    events, orders, products = _day_inputs(spark, root, [day])
    return daily_aggregates(events, orders, products)


def build_features(
    spark: "SparkSession", root: Path, day: dt.date, *, mode: str = "auto", keep_dailies: bool = True
) -> FeatureRun:
    """Build the features as of ``day`` from the staged directory ``root``.

    Args:
        mode: ``incremental`` (needs the state of the day before and the expiring dailies staged),
            ``full`` (recompute from every staged validated day up to ``day``), or ``auto``
            (incremental when the previous state is staged, else full).
        keep_dailies: in full mode, also write the dailies of the past days still inside a window
            (what later incremental days subtract). A one-off build as of a date (an evaluation)
            does not need them.

    Returns:
        The mode used and the row counts written under ``root/features/``.
    """
    from pyspark.sql import functions as F

    previous_day = day - dt.timedelta(days=1)
    has_previous = all(
        read_partition(spark, root, FEATURE_LAYER, f"state_{a.name}", previous_day) is not None for a in AGGREGATES
    )
    if mode == "auto":
        mode = "incremental" if has_previous else "full"
    rows: dict[str, int] = {}
    expired: list[str] = []
    today = {name: frame.cache() for name, frame in daily_for(spark, root, day).items()}
    cached = list(today.values())
    if mode == "incremental":
        if not has_previous:
            raise ValueError(f"incremental build of {day} needs features/state_*/dt={previous_day} staged")
        states = {}
        for aggregate in AGGREGATES:
            expiring = {}
            for window in aggregate.windows:
                gone = day - dt.timedelta(days=window)
                expiring[window] = read_partition(spark, root, FEATURE_LAYER, f"daily_{aggregate.name}", gone)
                if expiring[window] is not None:
                    expired.append(f"daily_{aggregate.name}/{gone}")
            previous = read_partition(spark, root, FEATURE_LAYER, f"state_{aggregate.name}", previous_day)
            assert previous is not None
            states[aggregate.name] = fold_incremental(aggregate, previous, today[aggregate.name], expiring, day)
    elif mode == "full":
        history = staged_days(root, "validated", "events", day)
        if day not in history:
            raise ValueError(f"full build of {day} needs validated/events/dt={day} staged")
        events, orders, products = _day_inputs(spark, root, history)
        dailies = {name: frame.cache() for name, frame in daily_aggregates(events, orders, products).items()}
        cached += dailies.values()
        states = {a.name: fold_full(a, dailies[a.name], day) for a in AGGREGATES}
        # Later incremental days subtract the dailies of days still inside a window: write them too.
        oldest = day - dt.timedelta(days=max(spec.WINDOWS) - 1)
        for aggregate in AGGREGATES if keep_dailies else ():
            past = dailies[aggregate.name].where((F.col(DAY) >= F.lit(oldest)) & (F.col(DAY) < F.lit(day)))
            written = write_daily_partitions(past, root, f"daily_{aggregate.name}", aggregate.keys)
            rows.update({f"daily_{aggregate.name}/{d}": n for d, n in written.items()})
    else:
        raise ValueError(f"unknown feature build mode {mode!r}; expected auto, incremental or full")

    for aggregate in AGGREGATES:
        daily_path = partition_dir(root, FEATURE_LAYER, f"daily_{aggregate.name}", day)
        rows[f"daily_{aggregate.name}"] = write_table(today[aggregate.name].drop(DAY), daily_path, aggregate.keys)
        state_path = partition_dir(root, FEATURE_LAYER, f"state_{aggregate.name}", day)
        rows[f"state_{aggregate.name}"] = write_table(states[aggregate.name], state_path, aggregate.keys)
    # Features read the state just written (short lineage, and exactly what the next day starts from).
    state = {a.name: _read_state(spark, root, a, day) for a in AGGREGATES}
    customers = customer_features(
        state[CUSTOMERS.name], state[CUSTOMER_CATEGORIES.name], _snapshot(spark, root, "customers", day), day
    )
    products = product_features(state[PRODUCTS.name], state[PAIRS.name], _snapshot(spark, root, "products", day), day)
    rows["customers"] = write_table(customers, partition_dir(root, FEATURE_LAYER, "customers", day), ["customer_id"])
    rows["products"] = write_table(products, partition_dir(root, FEATURE_LAYER, "products", day), ["product_id"])
    for frame in cached:
        frame.unpersist()
    log.info("features as of %s (%s): %s", day, mode, rows)
    return FeatureRun(day=day, mode=mode, rows=rows, expired_days=tuple(expired))


def _read_state(spark: "SparkSession", root: Path, aggregate: Aggregate, day: dt.date) -> "DataFrame":
    frame = read_partition(spark, root, FEATURE_LAYER, f"state_{aggregate.name}", day)
    assert frame is not None, f"state_{aggregate.name} of {day} was just written"
    return frame


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
    joined = (
        candidates.select("customer_id", "product_id")
        .join(pairs, ["customer_id", "product_id"], "left")
        .join(products.select("product_id", "product_top_category", "product_price"), "product_id", "left")
        .join(customers.select("customer_id", "customer_view_price_90d"), "customer_id", "left")
        .join(affinity, ["customer_id", "product_top_category"], "left")
    )
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
    }
    frame = joined.select("customer_id", "product_id", *(value.alias(name) for name, value in columns.items()))
    return _finish(frame, ["customer_id", "product_id"], spec.PAIR_FEATURES)
