"""Training examples for an anchor date: labels from the horizon after it, features as of it.

For anchor A and horizon H:

* positives: every (customer, product) with an order line in days A+1 .. A+H, where both the
  customer and the product had features as of A (a product launched later cannot be recommended at A);
* population: the customers with a positive plus those active in the 90 days up to A, so the model
  also sees customers who buy nothing;
* negatives per customer: ``negatives_per_positive`` x max(positives, 1), half (at most) from
  products the customer viewed, carted or bought before but did not buy in the horizon, the rest
  drawn by popularity (30-day purchases + 1) from the catalogue of A, never a positive. Draws are
  seeded by (seed, anchor, customer), so a rerun gives the same examples.

Output: Parquet and GZIP TFRecord files with the same rows in the same order (file ``i`` of each
holds the same examples), plus ``schema.json`` from the feature spec.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import logging
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from include.preference.features import spec
from include.preference.features.build import FEATURE_LAYER, pair_features
from include.preference.storage.partitions import PartitionRef
from include.preference.storage.spark_lake import SparkLake, file_count

if TYPE_CHECKING:
    import pandas as pd
    import pyarrow as pa
    from pyspark.sql import DataFrame, SparkSession

log = logging.getLogger(__name__)

ACTIVE_DAYS = 90
TFRECORD_PATTERN = "part-{index:05d}.tfrecord.gz"


@dataclass(frozen=True)
class ExampleSettings:
    """How examples are drawn."""

    horizon_days: int = 7
    negatives_per_positive: int = 4
    seed: int = 17

    def __post_init__(self) -> None:
        if self.horizon_days < 1 or self.negatives_per_positive < 1:
            raise ValueError("horizon_days and negatives_per_positive must be at least 1")


def horizon_days_of(anchor: dt.date, horizon_days: int) -> list[dt.date]:
    """The label days of an anchor: A+1 .. A+H."""
    return [anchor + dt.timedelta(days=i) for i in range(1, horizon_days + 1)]


def _stable_seed(*parts: Any) -> int:
    digest = hashlib.blake2b("|".join(str(p) for p in parts).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little")


def sample_popular(
    customers: list[str],
    wanted: list[int],
    excluded: list[set[str]],
    products: np.ndarray,
    weights: np.ndarray,
    seed: int,
    anchor: dt.date,
) -> Iterator[tuple[str, str]]:
    """Draw ``wanted[i]`` distinct products for ``customers[i]``, weighted, none in ``excluded[i]``.

    Inverse-CDF draws against the cumulative weights (binary search), so the cost per customer
    does not depend on the catalogue size; a customer's draws depend only on (seed, anchor, customer).
    """
    cumulative = np.cumsum(weights, dtype=np.float64)
    total = cumulative[-1]
    for customer, count, exclude in zip(customers, wanted, excluded, strict=True):
        available = len(products) - len(exclude)
        count = min(count, max(available, 0))
        if count <= 0:
            continue
        rng = np.random.default_rng(_stable_seed(seed, anchor, customer))
        chosen: list[str] = []
        taken = set(exclude)
        attempts = 0
        while len(chosen) < count and attempts < 8:
            draws = np.searchsorted(cumulative, rng.random(2 * count + 4) * total, side="right")
            for index in draws:
                product = str(products[min(int(index), len(products) - 1)])
                if product not in taken:
                    taken.add(product)
                    chosen.append(product)
                    if len(chosen) == count:
                        break
            attempts += 1
        for product in chosen:
            yield customer, product


def build_training_examples(
    spark: "SparkSession", lake: SparkLake, anchor: dt.date, settings: ExampleSettings, target: PartitionRef
) -> dict[str, Any]:
    """Build the examples of ``anchor`` from the inputs of ``lake`` into ``target`` in its work area.

    Needs as inputs: ``features/{customers,products,state_pairs,state_customer_categories}/dt=anchor``
    and ``validated/orders`` for every horizon day. Writes ``parquet/``, ``tfrecord/`` and ``schema.json``.

    Returns:
        Counts (examples, positives, negatives, customers) and ``shards``: TFRecord file -> records.
    """
    from pyspark.sql import Window
    from pyspark.sql import functions as F

    def need(layer: str, table: str, day: dt.date) -> "DataFrame":
        return lake.need(spark, PartitionRef(layer, table, day), f"training examples of {anchor} need it")

    customers = need(FEATURE_LAYER, "customers", anchor)
    products = need(FEATURE_LAYER, "products", anchor)
    pairs = need(FEATURE_LAYER, "state_pairs", anchor)
    categories = need(FEATURE_LAYER, "state_customer_categories", anchor)
    orders = lake.read_days(spark, "validated", "orders", horizon_days_of(anchor, settings.horizon_days))

    positives = (
        orders.select("customer_id", "product_id")
        .distinct()
        .join(customers.select("customer_id"), "customer_id")
        .join(products.select("product_id"), "product_id")
        .cache()
    )
    active = customers.where(F.col("customer_days_since_active") < ACTIVE_DAYS).select("customer_id")
    per_customer = (
        active.unionByName(positives.select("customer_id"))
        .distinct()
        .join(positives.groupBy("customer_id").agg(F.count(F.lit(1)).alias("positives")), "customer_id", "left")
        .withColumn("positives", F.coalesce("positives", F.lit(0)))
        .withColumn("negatives", F.greatest(F.col("positives"), F.lit(1)) * F.lit(settings.negatives_per_positive))
        .cache()
    )

    # Seen (viewed, carted or bought before) but not bought in the horizon: at most half of a
    # customer's negatives. Purchase-only sources (invoices) have no views: there the hard
    # negatives are earlier purchases that were not repeated.
    viewed = (
        pairs.where((F.col("views_all") > 0) | (F.col("carts_all") > 0) | (F.col("purchases_all") > 0))
        .select("customer_id", "product_id")
        .join(positives, ["customer_id", "product_id"], "left_anti")
        .join(products.select("product_id"), "product_id")
        .join(per_customer.select("customer_id", "negatives"), "customer_id")
        .withColumn("order", F.xxhash64(F.lit(settings.seed), F.lit(anchor.isoformat()), "customer_id", "product_id"))
    )
    ranked = viewed.withColumn(
        "rank", F.row_number().over(Window.partitionBy("customer_id").orderBy("order", "product_id"))
    )
    viewed_negatives = (
        ranked.where(F.col("rank") <= F.ceil(F.col("negatives") / 2)).select("customer_id", "product_id").cache()
    )

    # Popularity-weighted draws for the rest, excluding positives and the viewed negatives.
    catalogue: pd.DataFrame = (
        products.select("product_id", f"product_purchases_{spec.BUYER_WINDOW}d").orderBy("product_id").toPandas()
    )
    product_ids = catalogue["product_id"].to_numpy(dtype=object)
    weights = catalogue[f"product_purchases_{spec.BUYER_WINDOW}d"].to_numpy(dtype=np.float64) + 1.0
    taken = (
        positives.unionByName(viewed_negatives).groupBy("customer_id").agg(F.collect_list("product_id").alias("taken"))
    )
    viewed_counts = viewed_negatives.groupBy("customer_id").agg(F.count(F.lit(1)).alias("viewed"))
    requests = (
        per_customer.join(viewed_counts, "customer_id", "left")
        .join(taken, "customer_id", "left")
        .select(
            "customer_id",
            (F.col("negatives") - F.coalesce("viewed", F.lit(0))).alias("wanted"),
            F.coalesce("taken", F.array().cast("array<string>")).alias("taken"),
        )
    )
    seed = settings.seed

    def draw(batches: Iterator[Any]) -> Iterator[Any]:
        import pandas as pd

        for batch in batches:
            pairs_out = list(
                sample_popular(
                    batch["customer_id"].tolist(),
                    [int(w) for w in batch["wanted"]],
                    [set(t) for t in batch["taken"]],
                    product_ids,
                    weights,
                    seed,
                    anchor,
                )
            )
            yield pd.DataFrame(pairs_out, columns=["customer_id", "product_id"], dtype=object)

    popular_negatives = requests.mapInPandas(draw, "customer_id string, product_id string")

    labelled = (
        positives.withColumn(spec.LABEL, F.lit(1.0))
        .unionByName(viewed_negatives.withColumn(spec.LABEL, F.lit(0.0)))
        .unionByName(popular_negatives.withColumn(spec.LABEL, F.lit(0.0)))
    )
    pair_columns = pair_features(labelled, pairs, categories, customers, products, anchor)
    examples = (
        labelled.join(customers, "customer_id")
        .join(products, "product_id")
        .join(pair_columns, ["customer_id", "product_id"])
        .withColumn("anchor_date", F.lit(anchor))
        .select(
            *spec.KEYS,
            "anchor_date",
            F.col(spec.LABEL).cast("float").alias(spec.LABEL),
            *(f.name for f in spec.FEATURES),
        )
        .cache()
    )
    total = examples.count()
    positive_count = examples.where(F.col(spec.LABEL) == 1.0).count()
    files = file_count(examples)
    order = shuffled_order(settings.seed)
    lake.write_table(examples, target, spec.KEYS, sub="parquet", files=files, order=order)
    shards = write_tfrecords(examples, lake, target, files, order)
    schema = json.dumps(spec.tfrecord_schema(), indent=2, sort_keys=True) + "\n"
    lake.put_bytes(target, "schema.json", schema.encode())
    counts = {
        "examples": total,
        "positives": positive_count,
        "negatives": total - positive_count,
        "customers": examples.select("customer_id").distinct().count(),
        "shards": {f"tfrecord/{name}": rows for name, rows in shards.items()},
    }
    for frame in (examples, positives, per_customer, viewed_negatives):
        frame.unpersist()
    log.info("training examples for %s: %s", anchor, counts)
    return counts


def shuffled_order(seed: int) -> list[Any]:
    """A seeded pseudo-random row order (a hash of the keys, keys as tie-break): files hold examples
    already shuffled, so readers need only shuffle batches, and a rerun writes the same order."""
    from pyspark.sql import functions as F

    return [F.xxhash64(F.lit(seed), *spec.KEYS), *spec.KEYS]


def write_tfrecords(
    examples: "DataFrame", lake: SparkLake, target: PartitionRef, files: int, order: list[Any] | None = None
) -> dict[str, int]:
    """Write ``examples`` as GZIP TFRecord shards under ``target/tfrecord/`` in the lake's work area.

    Partitioned and ordered like :meth:`SparkLake.write_table`. Each Spark task encodes its
    partition's Arrow batches in Python and streams one shard, named by its partition index,
    straight to S3 from the executor. Returns shard name -> record count.
    """
    settings = lake.store.settings
    prefix = lake.prefix(target, "tfrecord")

    def write_partition(batches: Iterator["pa.RecordBatch"]) -> Iterator["pa.RecordBatch"]:
        import pyarrow as pa
        from pyspark import TaskContext

        from include.preference.features.tfrecord import write_records
        from include.preference.storage.s3 import ObjectStore

        context = TaskContext.get()
        index = context.partitionId() if context is not None else 0
        name = TFRECORD_PATTERN.format(index=index)
        with ObjectStore(settings).writer(prefix + name) as out:
            count = write_records(out, batches)
        yield pa.RecordBatch.from_pydict({"shard": [name], "records": [count]})

    ordered = examples.repartition(files, *spec.KEYS).sortWithinPartitions(*(order or spec.KEYS))
    written = ordered.mapInArrow(write_partition, "shard string, records long").collect()
    shards = {row["shard"]: int(row["records"]) for row in written if row["records"] > 0}
    empty = [prefix + row["shard"] for row in written if row["records"] == 0]
    if empty and shards:
        lake.store.delete_keys(empty)
    return dict(sorted(shards.items()))
