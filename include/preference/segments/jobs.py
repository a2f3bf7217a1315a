"""The segment tasks: ``refresh_segments``, ``assign_segments`` (customers and products), ``compute_rfm``.

Storage (``segments/`` layer):

* ``centroids_<entity>/dt=D/`` (refresh): ``centroids.json`` (id, centroid, sample members),
  ``sample_map.parquet`` (the stratified sample's t-SNE map and clusters), ``metrics.json`` and
  ``tsne.png``; the manifest records the model version. Written only when the champion changed
  since the latest centroids.
* ``<entity>/dt=D/`` (assign): ``assignments/part-*.parquet`` (id, cluster_id, l1_distance,
  model_version, centroids_date), ``centroids.json`` (the centroids used), ``summary.json`` (count,
  share, mean distance per cluster), ``migration.json`` (previous day's cluster -> today's, with
  ``new`` and ``gone``), plots.
* ``rfm/dt=D/``: customer_id, recency, frequency, monetary, their scores, ``rfm_score``, ``tier``.

Segments live in the taste part of the embeddings, scaled to unit length
(:func:`include.preference.segments.assign.segment_space`): centroids, t-SNE maps and L1 distances
are all in that space. Customers can be segmented on their profiles instead
(``PREFERENCE_SEGMENT_SPACE=profile``: ``scores/customer_profiles``, unit length); centroids record
the space and the model version they were found with, and the customers' refresh report
(``metrics.json`` -> ``spaces``) compares both spaces on the same sample: silhouette,
Davies-Bouldin and, on the synthetic world, the adjusted Rand index against the planted groups.

Plots are also published under ``reports/{segment_map_<entity>,segments_<entity>,rfm}/dt=D/`` and
logged to MLflow (one run per task and date in the ``customer-preference-segments`` experiment).
"""

from __future__ import annotations

import datetime as dt
import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from include.preference.config import Settings
from include.preference.segments.assign import segment_space
from include.preference.storage import (
    Manifest,
    ObjectStore,
    PartFile,
    PartitionRef,
    list_partitions,
    publish_files,
    read_file,
    read_manifest,
    read_table,
    require_manifest,
    scratch_directory,
    upstream_entry,
)
from include.preference.storage.spark_lake import spark_lake

if TYPE_CHECKING:
    from pyspark.sql import Column, DataFrame, SparkSession

log = logging.getLogger(__name__)

ENTITIES = {"customers": ("customer", "customer_id"), "products": ("product", "product_id")}
SEGMENTS = "segments"
EXPERIMENT = "customer-preference-segments"
NEW, GONE = "new", "gone"


def _entity(entity: str) -> tuple[str, str]:
    if entity not in ENTITIES:
        raise ValueError(f"unknown entity {entity!r}; expected one of {', '.join(ENTITIES)}")
    return ENTITIES[entity]


def embeddings_ref(entity: str, day: dt.date) -> PartitionRef:
    return PartitionRef("scores", f"{_entity(entity)[0]}_embeddings", day)


@dataclass(frozen=True)
class Space:
    """What an entity is segmented on: a scores table, its vector column, and how it is scaled."""

    name: str  # "taste" or "profile" (see segment_space)
    table: str
    column: str

    def ref(self, day: dt.date) -> PartitionRef:
        return PartitionRef("scores", self.table, day)


TASTE_CUSTOMERS = Space("taste", "customer_embeddings", "embedding")
PROFILE_CUSTOMERS = Space("profile", "customer_profiles", "profile")


def space_of(settings: Settings, entity: str) -> Space:
    """Customers on ``PREFERENCE_SEGMENT_SPACE`` (taste or profile); products always on taste."""
    prefix, _ = _entity(entity)
    if entity == "customers" and settings.segment_space == "profile":
        return PROFILE_CUSTOMERS
    return Space("taste", f"{prefix}_embeddings", "embedding")


def _same_space(manifest: Manifest | None, version: str, space: Space) -> bool:
    """Whether centroids (their manifest) were found on ``space`` with that model version."""
    if manifest is None:
        return False
    return str(manifest.extra.get("model_version")) == version and manifest.extra.get("space", "taste") == space.name


def latest_centroids(store: ObjectStore, entity: str, day: dt.date) -> PartitionRef | None:
    """The latest centroid refresh on or before ``day``."""
    days = [d for d in list_partitions(store, SEGMENTS, f"centroids_{entity}") if d <= day]
    return PartitionRef(SEGMENTS, f"centroids_{entity}", days[-1]) if days else None


def _vectors(table: Any, column: str = "embedding") -> np.ndarray:
    values = table.column(column).combine_chunks()
    flat = values.flatten().to_numpy(zero_copy_only=False)
    return flat.reshape(len(values), -1).astype(np.float32) if len(values) else np.zeros((0, 0), np.float32)


def _strata(store: ObjectStore, entity: str, day: dt.date) -> tuple[PartitionRef, str, str]:
    """Where each row's stratum comes from: (partition, column, name).

    The RFM tier for customers when the day's tiers are published, else the top category.
    """
    rfm = PartitionRef(SEGMENTS, "rfm", day)
    if entity == "customers" and read_manifest(store, rfm) is not None:
        return rfm, "tier", "rfm_tier"
    return PartitionRef("features", entity, day), f"{_entity(entity)[0]}_top_category", "top_category"


SAMPLE_PARTITIONS = 16


def stratified_sample(rows: "DataFrame", key: str, per_stratum: int, seed: int) -> pd.DataFrame:
    """About ``per_stratum`` rows of each stratum (Spark ``sampleBy``; every row of a small stratum).

    The stratum sizes and the sample reach the driver, never the whole table. The rows are put in
    a fixed layout first (hash partitions by key, sorted), so the same rows give the same sample
    however they were read; the sample comes back sorted by key.
    """
    from pyspark.sql import functions as F

    counts = {
        str(r["stratum"]): int(r["n"]) for r in rows.groupBy("stratum").agg(F.count(F.lit(1)).alias("n")).collect()
    }
    fractions = {s: min(1.0, per_stratum / n) for s, n in counts.items()}
    laid_out = rows.withColumn("stratum", F.col("stratum").cast("string"))
    laid_out = laid_out.repartition(SAMPLE_PARTITIONS, key).sortWithinPartitions(key)
    sample: pd.DataFrame = laid_out.sampleBy("stratum", fractions, seed).toPandas()
    return sample.sort_values(key).reset_index(drop=True)


def space_column(embedding: "Column", space: str = "taste") -> "Column":
    """:func:`segment_space` as a Spark expression: the taste part of an embedding (or a whole
    profile), unit length."""
    from pyspark.sql import functions as F

    from include.preference.model import TASTE_DIM

    taste = F.slice(embedding, 1, TASTE_DIM) if space == "taste" else embedding
    norm = F.sqrt(F.aggregate(taste, F.lit(0.0).cast("double"), lambda acc, x: acc + x * x))
    return F.transform(taste, lambda x: F.when(norm > 0, x / norm).otherwise(F.lit(0.0)))


def cluster_means(assigned: "DataFrame", space: str = "taste") -> tuple[np.ndarray, np.ndarray]:
    """(cluster ids, mean segment-space vector of each) of rows with ``embedding`` and ``cluster_id``.

    A Spark aggregate per (cluster, dimension): clusters x dimensions values reach the driver.
    """
    from pyspark.sql import functions as F

    vectors = space_column(F.col("embedding"), space)
    exploded = assigned.select("cluster_id", F.posexplode(vectors).alias("dim", "value"))
    means: pd.DataFrame = exploded.groupBy("cluster_id", "dim").agg(F.avg("value").alias("value")).toPandas()
    if means.empty:
        return np.zeros(0, np.int64), np.zeros((0, 0), np.float32)
    grid = means.pivot(index="cluster_id", columns="dim", values="value").sort_index()
    return grid.index.to_numpy(dtype=np.int64), grid.sort_index(axis=1).to_numpy(dtype=np.float32)


def run_refresh_segments(
    store: ObjectStore, settings: Settings, day: dt.date, entity: str, *, run_id: str
) -> dict[str, Any]:
    """Discover clusters on a stratified sample when the champion changed since the latest centroids."""
    import pyarrow as pa
    from pyspark.sql import functions as F

    from include.preference.segments import plots
    from include.preference.segments.cluster import discover, match_ids
    from include.preference.spark import spark_session
    from include.preference.storage.partitions import parquet_bytes

    _, key = _entity(entity)
    space = space_of(settings, entity)
    ref = space.ref(day)
    manifest = require_manifest(store, ref)
    version = str(manifest.extra.get("model_version"))
    previous = latest_centroids(store, entity, day - dt.timedelta(days=1))
    previous_manifest = read_manifest(store, previous) if previous else None
    if previous is not None and _same_space(previous_manifest, version, space):
        return {
            "date": day.isoformat(),
            "skipped": f"champion v{version} ({space.name} space) unchanged since the centroids of {previous.date}",
        }

    strata_ref, strata_column, strata_name = _strata(store, entity, day)
    upstream = [upstream_entry(store, strata_ref), upstream_entry(store, ref, manifest)]
    before_ref = _previous_assignments_ref(store, entity, day) if previous is not None else None
    with spark_lake(store, f"refresh-{entity}-{day}") as lake:
        spark = spark_session("refresh_segments", s3=settings.s3)
        lake.add(ref, manifest)
        lake.add(strata_ref, require_manifest(store, strata_ref))
        embedded = lake.need(spark, ref, "segments are found on it").select(key, F.col(space.column).alias("embedding"))
        strata = lake.need(spark, strata_ref, "it gives the strata").select(key, F.col(strata_column).alias("stratum"))
        rows = embedded.join(strata, key, "left").fillna({"stratum": "unknown"})
        sample = stratified_sample(rows, key, settings.segment_sample_per_stratum, settings.sampling_seed)
        vectors = (
            segment_space(np.stack(sample["embedding"].to_numpy()), space.name) if len(sample) else np.zeros((0, 0))
        )
        found = discover(vectors, seed=settings.sampling_seed)

        # Stable ids: previous clusters, re-expressed in today's embedding space as the mean embedding
        # of their members of the previous day, matched to the new centroids (Hungarian, L1).
        cluster_ids = found.cluster_ids
        matched_against = None
        if before_ref is not None:
            lake.add(*before_ref)
            before = lake.need(spark, before_ref[0], "ids are matched against it").select(key, "cluster_id")
            old_ids, old = cluster_means(embedded.join(before, key), space.name)
            if len(old_ids):
                cluster_ids = match_ids(old, old_ids, found.centroids)
                matched_against = "previous day's assignments"
    relabel = dict(zip(found.cluster_ids.tolist(), cluster_ids.tolist(), strict=True))
    labels = np.array([relabel.get(int(label), -1) for label in found.labels])
    centroids = [
        {"cluster_id": int(cid), "centroid": found.centroids[i].tolist(), "sample_members": int((labels == cid).sum())}
        for i, cid in enumerate(cluster_ids)
    ]
    alternative = _compare_with_review_text(store, entity, day, sample[key], vectors, settings.sampling_seed)
    if alternative is not None:
        upstream.append(alternative.pop("upstream"))
    spaces = None
    if entity == "customers":
        spaces = compare_spaces(store, day, sample[key], space, found, version, settings.sampling_seed)
        upstream.extend(spaces.pop("upstream"))
    metrics = {
        "alternative_inputs": alternative,
        "spaces": spaces,
        "space": space.name,
        "model_version": version,
        "clusters": len(centroids),
        "sample_rows": len(sample),
        "sample_per_stratum": {str(k): int(v) for k, v in sample["stratum"].value_counts().sort_index().items()},
        "strata": strata_name,
        "eps": found.eps,
        "min_samples": found.min_samples,
        "noise_share": found.noise_share,
        "silhouette": found.silhouette,
        "davies_bouldin": found.davies_bouldin,
        "ids_matched_against": matched_against,
    }
    sample_map = pa.table(
        {
            key: pa.array(sample[key].astype(str).tolist(), pa.string()),
            "stratum": pa.array(sample["stratum"].astype(str).tolist(), pa.string()),
            "x": pa.array(found.map2d[:, 0], pa.float32()),
            "y": pa.array(found.map2d[:, 1], pa.float32()),
            "cluster_id": pa.array(labels, pa.int64()),
        }
    )
    with scratch_directory(settings.scratch_dir, f"refresh-{entity}-{day}") as scratch:
        what = "embeddings' taste part" if space.name == "taste" else "customer profiles"
        title = f"{entity}: t-SNE of the champion v{version} {what}, {day}"
        png = plots.tsne_map(found.map2d, labels, scratch / f"tsne_{entity}.png", title)
        parts = [
            PartFile("centroids.json", json.dumps(centroids).encode(), len(centroids)),
            PartFile("sample_map.parquet", parquet_bytes(sample_map), sample_map.num_rows),
            PartFile("metrics.json", json.dumps(metrics, indent=2, sort_keys=True).encode()),
            PartFile(png.name, png.read_bytes()),
        ]
        publish_files(
            store,
            PartitionRef(SEGMENTS, f"centroids_{entity}", day),
            parts,
            run_id=run_id,
            code_version=settings.code_version,
            upstream=upstream,
            extra={
                "model_version": version,
                "space": space.name,
                "clusters": len(centroids),
                "silhouette": found.silhouette,
            },
        )
        _report(store, settings, f"segment_map_{entity}", day, run_id, [png], {"metrics.json": metrics}, upstream)
        _log_mlflow(settings, f"refresh_segments/{entity}/{day}", metrics, [png], version)
    return {
        "date": day.isoformat(),
        **{
            k: metrics[k] for k in ("model_version", "space", "clusters", "silhouette", "davies_bouldin", "noise_share")
        },
        "spaces": spaces,
    }


MIN_TEXT_ROWS = 20


def _compare_with_review_text(
    store: ObjectStore, entity: str, day: dt.date, ids: pd.Series, vectors: np.ndarray, seed: int
) -> dict[str, Any] | None:
    """Silhouette and Davies-Bouldin of clusters found on review-text profiles vs on the model's
    embeddings, for the sampled customers who have a text profile (None when too few have one)."""
    from include.preference.segments.cluster import discover

    ref = PartitionRef("features", "customer_text", day)
    manifest = read_manifest(store, ref) if entity == "customers" else None
    if manifest is None:
        return None
    text = read_table(store, ref, columns=["customer_id", "embedding"])
    position = {c: i for i, c in enumerate(text.column("customer_id").to_pylist())}
    rows = [(i, position[c]) for i, c in enumerate(ids) if c in position]
    if len(rows) < MIN_TEXT_ROWS:
        return None
    sample_rows, text_rows = (np.asarray(x) for x in zip(*rows, strict=True))
    by_input = {
        "review_text": discover(_vectors(text)[text_rows], seed=seed),
        "model_embedding": discover(vectors[sample_rows], seed=seed),
    }
    out: dict[str, Any] = {
        name: {
            "rows": len(rows),
            "clusters": len(found.cluster_ids),
            "noise_share": found.noise_share,
            "silhouette": found.silhouette,
            "davies_bouldin": found.davies_bouldin,
        }
        for name, found in by_input.items()
    }
    out["upstream"] = upstream_entry(store, ref, manifest)
    return out


def planted_groups(store: ObjectStore, day: dt.date) -> dict[str, int] | None:
    """customer_id -> planted group when the day's raw customers come from the synthetic world
    (its generator settings are in the raw manifest, and equal settings build the same world);
    None for any other source. For evaluation only: no segment is built from it."""
    from include.preference.sources.synthetic import SyntheticConfig, ground_truth

    manifest = read_manifest(store, PartitionRef("raw", "customers", day))
    if manifest is None or manifest.extra.get("source") != "synthetic":
        return None
    truth = ground_truth(SyntheticConfig(**manifest.extra["generator"]))["customers"]
    return dict(zip(truth["customer_id"].astype(str), truth["group"].astype(int), strict=True))


def _quality(found: Any, ids: pd.Series, groups: dict[str, int] | None) -> dict[str, Any]:
    """Silhouette, Davies-Bouldin, clusters and noise of one discovery; with planted groups, the
    adjusted Rand index of its clusters (DBSCAN noise as one more label) against them."""
    from sklearn.metrics import adjusted_rand_score

    out: dict[str, Any] = {
        "rows": len(ids),
        "clusters": len(found.cluster_ids),
        "noise_share": found.noise_share,
        "silhouette": found.silhouette,
        "davies_bouldin": found.davies_bouldin,
        "adjusted_rand_index": None,
    }
    if groups is not None:
        known = np.array([c in groups for c in ids])
        if known.any():
            truth = [groups[c] for c in ids[known]]
            out["adjusted_rand_index"] = float(adjusted_rand_score(truth, np.asarray(found.labels)[known]))
    return out


def compare_spaces(
    store: ObjectStore, day: dt.date, ids: pd.Series, used: "Space", found: Any, version: str, seed: int
) -> dict[str, Any]:
    """The segment report's comparison of the two customer spaces on the same sampled customers:
    the taste part of the champion's embeddings and the customer profiles, each clustered the same
    way (t-SNE + DBSCAN), with silhouette, Davies-Bouldin and, on the synthetic world, the adjusted
    Rand index against the planted groups. A space whose scores are not published that day is None.

    ``used``/``found``: the space the segments were built on and its discovery (not redone).
    """
    from include.preference.segments.cluster import discover

    groups = planted_groups(store, day)
    out: dict[str, Any] = {"planted_groups": groups is not None, "used": used.name, "upstream": []}
    for space in (TASTE_CUSTOMERS, PROFILE_CUSTOMERS):
        if space.name == used.name:
            out[space.name] = {**_quality(found, ids.reset_index(drop=True), groups), "model_version": version}
            continue
        ref = space.ref(day)
        manifest = read_manifest(store, ref)
        if manifest is None:
            out[space.name] = None
            continue
        table = read_table(store, ref, columns=["customer_id", space.column])
        position = {c: i for i, c in enumerate(table.column("customer_id").to_pylist())}
        rows = [(c, position[c]) for c in ids if c in position]
        if len(rows) < MIN_TEXT_ROWS:
            out[space.name] = None
            continue
        kept, at = zip(*rows, strict=True)
        vectors = segment_space(_vectors(table, space.column)[np.asarray(at)], space.name)
        out[space.name] = {
            **_quality(discover(vectors, seed=seed), pd.Series(kept), groups),
            "model_version": str(manifest.extra.get("model_version")),
        }
        out["upstream"].append(upstream_entry(store, ref, manifest))
    return out


def _previous_assignments_ref(store: ObjectStore, entity: str, day: dt.date) -> tuple[PartitionRef, Manifest] | None:
    """The latest assignments before ``day`` (what today's migration starts from), with its manifest."""
    days = [d for d in list_partitions(store, SEGMENTS, entity) if d < day]
    if not days:
        return None
    ref = PartitionRef(SEGMENTS, entity, days[-1])
    return ref, require_manifest(store, ref)


def cluster_summary(assigned: Any, ids: np.ndarray, key: str, rows: int) -> pd.DataFrame:
    """Count, mean L1 distance and share of every centroid (in ``ids`` order, empty ones as 0)."""
    from pyspark.sql import functions as F

    per_cluster = (
        assigned.groupBy("cluster_id")
        .agg(F.count(F.lit(1)).alias("count"), F.avg("l1_distance").alias("mean_l1_distance"))
        .toPandas()
        .set_index("cluster_id")
    )
    summary = per_cluster.reindex(ids, fill_value=0)
    summary.index.name = "cluster_id"
    summary = summary.reset_index()
    summary["count"] = summary["count"].astype(np.int64)
    summary["mean_l1_distance"] = summary["mean_l1_distance"].astype(np.float64)
    summary["share"] = summary["count"] / max(rows, 1)
    return summary


def assignment_batches(centroids: np.ndarray, ids: np.ndarray, key: str, tag: dict[str, str], space: str = "taste"):
    """The ``mapInArrow`` function: (key, embedding) -> (key, cluster_id, l1_distance, tags...)."""
    import pyarrow as pa

    from include.preference.segments.assign import nearest_l1

    def run(batches):
        for batch in batches:
            values = batch.column("embedding")
            flat = values.flatten().to_numpy(zero_copy_only=False).astype(np.float32, copy=False)
            points = (
                segment_space(flat.reshape(batch.num_rows, -1), space)
                if batch.num_rows
                else np.zeros((0, centroids.shape[1]), np.float32)
            )
            index, distance = nearest_l1(points, centroids)
            columns = {
                key: batch.column(key),
                "cluster_id": pa.array(ids[index], pa.int64()),
                "l1_distance": pa.array(distance, pa.float32()),
            }
            columns.update({name: pa.array([value] * batch.num_rows, pa.string()) for name, value in tag.items()})
            yield pa.RecordBatch.from_pydict(columns)

    return run


def assign_frame(
    frame: Any,
    centroids: np.ndarray,
    ids: np.ndarray,
    key: str,
    tag: dict[str, str],
    space: str = "taste",
    column: str = "embedding",
) -> Any:
    """Every row of an embeddings (or profiles) DataFrame assigned to its nearest centroid (L1), in Spark."""
    from pyspark.sql import functions as F

    tags = "".join(f", {name} string" for name in tag)
    schema = f"{key} string, cluster_id long, l1_distance float{tags}"
    rows = frame.select(key, F.col(column).alias("embedding"))
    return rows.mapInArrow(assignment_batches(centroids, ids, key, tag, space), schema)


def migration(before: "DataFrame | None", after: "DataFrame", key: str) -> pd.DataFrame:
    """Counts from the previous day's cluster to today's (``new``: not there before; ``gone``: not today).

    A Spark aggregate over the two days' assignments: only the (from, to) counts reach the driver.
    """
    from pyspark.sql import functions as F

    today = after.select(key, F.col("cluster_id").cast("string").alias("to"))
    if before is None:
        joined = today.select(F.lit(NEW).alias("from"), "to")
    else:
        earlier = before.select(key, F.col("cluster_id").cast("string").alias("from"))
        joined = earlier.join(today, key, "full").select(
            F.coalesce("from", F.lit(NEW)).alias("from"), F.coalesce("to", F.lit(GONE)).alias("to")
        )
    counts: pd.DataFrame = joined.groupBy("from", "to").agg(F.count(F.lit(1)).alias("count")).toPandas()
    counts["count"] = counts["count"].astype(np.int64)
    return counts.sort_values(["from", "to"]).reset_index(drop=True)


# A segment's profile names what sets it apart: the categories and products whose share among its
# members most exceeds their share among all customers, each held by at least PROFILE_MIN_MEMBERS.
PROFILE_TOP = 3
PROFILE_MIN_MEMBERS = 3


def segment_profiles(
    assigned: "DataFrame", customers: "DataFrame", tiers: "DataFrame | None", pairs: "DataFrame | None"
) -> dict[int, dict[str, Any]]:
    """Per customer segment: members, mean revenue and orders, the RFM tier mix, and the top
    categories (by the members' most-interacted category) and products (bought by members) that
    distinguish it from all assigned customers, with their lift (share in the segment over share
    overall). Spark aggregates throughout: O(segments x PROFILE_TOP) rows reach the driver.

    Args:
        assigned: (customer_id, cluster_id) of the day's assignments.
        customers: the day's customer features.
        tiers: the day's RFM tiers (customer_id, tier), when published.
        pairs: the day's ``state_pairs`` (customer_id, product_id, purchases_all), when published.
    """
    from pyspark.sql import Window
    from pyspark.sql import functions as F

    from include.preference.features.spec import UNKNOWN

    members = assigned.select("customer_id", "cluster_id")
    base = members.join(
        customers.select("customer_id", "customer_monetary", "customer_frequency", "customer_top_category"),
        "customer_id",
        "left",
    )
    profiles: dict[int, dict[str, Any]] = {}
    for row in (
        base.groupBy("cluster_id")
        .agg(
            F.count(F.lit(1)).alias("members"),
            F.avg("customer_monetary").alias("mean_revenue"),
            F.avg("customer_frequency").alias("mean_orders"),
        )
        .collect()
    ):
        profiles[int(row["cluster_id"])] = {
            "members": int(row["members"]),
            "mean_revenue": float(row["mean_revenue"] or 0.0),
            "mean_orders": float(row["mean_orders"] or 0.0),
            "tiers": {},
            "top_categories": [],
            "top_products": [],
        }

    # Segment sizes and their total from the aggregate just collected, not from two more Spark jobs.
    total = sum(p["members"] for p in profiles.values())
    sizes = F.create_map(*(F.lit(v).cast("long") for c, p in profiles.items() for v in (c, p["members"])))

    def distinguishing(held: "DataFrame", item: str) -> "DataFrame":
        """(cluster_id, item, members, lift) of the PROFILE_TOP items by lift per segment."""
        overall = held.groupBy(item).agg(F.countDistinct("customer_id").alias("_overall"))
        inside = held.groupBy("cluster_id", item).agg(F.countDistinct("customer_id").alias("members"))
        lifted = (
            inside.withColumn("_size", sizes[F.col("cluster_id")])
            .join(overall, item)
            .where(F.col("members") >= PROFILE_MIN_MEMBERS)
            .withColumn("lift", (F.col("members") / F.col("_size")) / (F.col("_overall") / F.lit(max(total, 1))))
        )
        order = Window.partitionBy("cluster_id").orderBy(F.desc("lift"), F.desc("members"), F.asc(item))
        return lifted.withColumn("_rank", F.row_number().over(order)).where(F.col("_rank") <= PROFILE_TOP)

    categories = base.where(F.col("customer_top_category").isNotNull()).where(
        F.col("customer_top_category") != F.lit(UNKNOWN)
    )
    for row in distinguishing(categories, "customer_top_category").orderBy("cluster_id", "_rank").collect():
        profiles[int(row["cluster_id"])]["top_categories"].append(
            {"category": row["customer_top_category"], "members": int(row["members"]), "lift": float(row["lift"])}
        )
    if pairs is not None:
        bought = pairs.where(F.col("purchases_all") > 0).select("customer_id", "product_id")
        bought = bought.join(members, "customer_id")
        for row in distinguishing(bought, "product_id").orderBy("cluster_id", "_rank").collect():
            profiles[int(row["cluster_id"])]["top_products"].append(
                {"product_id": row["product_id"], "members": int(row["members"]), "lift": float(row["lift"])}
            )
    if tiers is not None:
        mix = tiers.select("customer_id", "tier").join(members, "customer_id").groupBy("cluster_id", "tier").count()
        for row in mix.collect():
            profiles[int(row["cluster_id"])]["tiers"][str(row["tier"])] = int(row["count"])
    return dict(sorted(profiles.items()))


def _profile_inputs(
    store: ObjectStore, lake: Any, spark: "SparkSession", day: dt.date
) -> tuple["DataFrame | None", "DataFrame | None", "DataFrame | None", list[dict[str, Any]]]:
    """The day's customer features, RFM tiers and pair state for :func:`segment_profiles` (each None
    when not published), registered on ``lake``, with their upstream entries."""
    found: list[Any] = []
    upstream = []
    for ref in (
        PartitionRef("features", "customers", day),
        PartitionRef(SEGMENTS, "rfm", day),
        PartitionRef("features", "state_pairs", day),
    ):
        manifest = read_manifest(store, ref)
        if manifest is None:
            found.append(None)
            continue
        lake.add(ref, manifest)
        found.append(lake.read(spark, ref))
        upstream.append(upstream_entry(store, ref, manifest))
    return found[0], found[1], found[2], upstream


def run_assign_segments(
    store: ObjectStore, settings: Settings, day: dt.date, entity: str, *, run_id: str
) -> dict[str, Any]:
    """Assign every embedded row of ``day`` to the nearest centroid of the same model version."""
    from include.preference.errors import PartitionNotFound
    from include.preference.segments import plots
    from include.preference.spark import spark_session

    _, key = _entity(entity)
    space = space_of(settings, entity)
    ref = space.ref(day)
    manifest = require_manifest(store, ref)
    version = str(manifest.extra.get("model_version"))
    centroids_ref = latest_centroids(store, entity, day)
    centroids_manifest = read_manifest(store, centroids_ref) if centroids_ref else None
    if centroids_ref is None or not _same_space(centroids_manifest, version, space):
        raise PartitionNotFound(
            f"no centroids of model v{version} ({space.name} space) for {entity} on or before {day}; "
            f"run refresh_segments for {day}"
        )
    assert centroids_manifest is not None
    centroids = json.loads(read_file(store, centroids_ref, "centroids.json"))
    matrix = np.asarray([c["centroid"] for c in centroids], dtype=np.float32)
    ids = np.asarray([c["cluster_id"] for c in centroids], dtype=np.int64)
    upstream = [upstream_entry(store, ref, manifest), upstream_entry(store, centroids_ref, centroids_manifest)]
    tag = {"model_version": version, "centroids_date": centroids_ref.date.isoformat()}

    previous = _previous_assignments_ref(store, entity, day)
    with (
        spark_lake(store, f"assign-{entity}-{day}") as lake,
        scratch_directory(settings.scratch_dir, f"assign-{entity}-{day}") as scratch,
    ):
        spark = spark_session("assign_segments", s3=settings.s3)
        lake.add(ref, manifest)
        target = PartitionRef(SEGMENTS, entity, day)
        rows = lake.write_table(
            assign_frame(
                lake.need(spark, ref, "segments are assigned from it"), matrix, ids, key, tag, space.name, space.column
            ),
            target,
            [key],
            sub="assignments",
        )
        # Per-cluster figures and the migration are Spark aggregates: O(clusters) reach the driver.
        today = lake.need(spark, target, "it was just written")
        summary = cluster_summary(today, ids, key, rows)
        before = None
        if previous is not None:
            lake.add(*previous)
            before = lake.read(spark, previous[0])
        moved = migration(before, today, key)
        history = _size_history(store, entity, day, summary)
        profiles: dict[int, dict[str, Any]] = {}
        if entity == "customers":
            features, tiers, pairs, inputs = _profile_inputs(store, lake, spark, day)
            if features is not None:
                profiles = segment_profiles(today, features, tiers, pairs)
                upstream += inputs
        lake.put_bytes(target, "profiles.json", json.dumps(profiles, indent=2).encode())
        lake.put_bytes(target, "centroids.json", json.dumps(centroids).encode())
        lake.put_bytes(target, "summary.json", json.dumps(summary.to_dict(orient="records"), indent=2).encode())
        lake.put_bytes(target, "migration.json", json.dumps(moved.to_dict(orient="records"), indent=2).encode())
        labels_from = sorted(set(moved["from"]), key=_label_order)
        labels_to = sorted(set(moved["to"]), key=_label_order)
        grid = moved.pivot_table(index="from", columns="to", values="count", fill_value=0).reindex(
            index=labels_from, columns=labels_to, fill_value=0
        )
        pngs = [
            plots.sizes_over_time(history, scratch / f"sizes_{entity}.png", f"{entity}: cluster sizes over time"),
            plots.migration_heatmap(
                labels_from,
                labels_to,
                grid.to_numpy(),
                scratch / f"migration_{entity}.png",
                f"{entity}: migration to {day}",
            ),
        ]
        for png in pngs:
            lake.put_bytes(target, png.name, png.read_bytes())
        published = lake.publish(
            target,
            run_id=run_id,
            code_version=settings.code_version,
            upstream=upstream,
            rows={
                "centroids.json": len(centroids),
                "summary.json": len(summary),
                "migration.json": len(moved),
                "profiles.json": len(profiles),
            },
            extra={
                "model_version": version,
                "space": space.name,
                "centroids_date": centroids_ref.date.isoformat(),
                "sizes": {str(c): int(n) for c, n in zip(summary["cluster_id"], summary["count"], strict=True)},
            },
        )
        moved_rows = int(moved[(moved["from"] != moved["to"])]["count"].sum())
        _report(
            store,
            settings,
            f"segments_{entity}",
            day,
            run_id,
            pngs,
            {"summary.json": summary.to_dict(orient="records")},
            upstream,
        )
        _log_mlflow(settings, f"assign_segments/{entity}/{day}", {"rows": rows, "moved": moved_rows}, pngs, version)
    return {
        "date": day.isoformat(),
        "model_version": version,
        "rows": rows,
        "clusters": len(ids),
        "moved": moved_rows,
        "version": published.version,
    }


def _label_order(label: str) -> tuple[int, int]:
    return (1, 0) if label in (NEW, GONE) else (0, int(label))


def _size_history(
    store: ObjectStore, entity: str, day: dt.date, today: pd.DataFrame, days: int = 30
) -> dict[str, dict[str, int]]:
    history: dict[str, dict[str, int]] = {}
    for past in [d for d in list_partitions(store, SEGMENTS, entity) if day - dt.timedelta(days=days) <= d < day]:
        manifest = read_manifest(store, PartitionRef(SEGMENTS, entity, past))
        if manifest is not None and manifest.extra.get("sizes"):
            history[past.isoformat()] = {str(k): int(v) for k, v in manifest.extra["sizes"].items()}
    history[day.isoformat()] = {str(c): int(n) for c, n in zip(today["cluster_id"], today["count"], strict=True)}
    return history


def run_compute_rfm(store: ObjectStore, settings: Settings, day: dt.date, *, run_id: str) -> dict[str, Any]:
    """RFM scores and value tiers of every customer who ordered, as of ``day``."""
    import pyarrow as pa

    from include.preference.segments import plots
    from include.preference.segments.rfm import FEATURE_COLUMNS, TIERS, tiers_from_features
    from include.preference.storage.partitions import parquet_bytes

    ref = PartitionRef("features", "customers", day)
    manifest = require_manifest(store, ref)
    columns = ["customer_id", "customer_has_ordered", *FEATURE_COLUMNS.values()]
    scored, fits = tiers_from_features(read_table(store, ref, columns=columns).to_pandas(), seed=settings.sampling_seed)
    counts = {tier: int((scored["tier"] == tier).sum()) for tier in TIERS}
    table = pa.Table.from_pandas(scored, preserve_index=False)
    fit_summary = {
        name: {"k": fit.k, "centers_log1p": fit.centers, "inertias": fit.inertias} for name, fit in fits.items()
    }
    upstream = [upstream_entry(store, ref, manifest)]
    with scratch_directory(settings.scratch_dir, f"rfm-{day}") as scratch:
        png = plots.tier_sizes(counts, scratch / "rfm_tiers.png", f"RFM value tiers, {day}")
        publish_files(
            store,
            PartitionRef(SEGMENTS, "rfm", day),
            [
                PartFile("part-00000.parquet", parquet_bytes(table), table.num_rows),
                PartFile("fits.json", json.dumps(fit_summary, indent=2).encode()),
                PartFile(png.name, png.read_bytes()),
            ],
            run_id=run_id,
            code_version=settings.code_version,
            upstream=upstream,
            extra={"tiers": counts, "k": {n: f.k for n, f in fits.items()}},
        )
        _report(
            store, settings, "rfm", day, run_id, [png], {"rfm.json": {"tiers": counts, "fits": fit_summary}}, upstream
        )
        _log_mlflow(settings, f"compute_rfm/{day}", {f"tier_{t}": n for t, n in counts.items()}, [png], None)
    return {"date": day.isoformat(), "customers": len(scored), "tiers": counts, "k": {n: f.k for n, f in fits.items()}}


def _report(store, settings, kind: str, day, run_id, pngs: list[Path], documents: dict[str, Any], upstream) -> None:
    """Publish a task's plots and summaries as ``reports/<kind>/dt=D/`` (one partition per task)."""
    parts = [PartFile(p.name, p.read_bytes()) for p in pngs]
    parts += [PartFile(name, json.dumps(body, indent=2, default=str).encode()) for name, body in documents.items()]
    publish_files(
        store,
        PartitionRef("reports", kind, day),
        parts,
        run_id=run_id,
        code_version=settings.code_version,
        upstream=upstream,
    )


def _log_mlflow(
    settings: Settings, run_key: str, metrics: dict[str, Any], pngs: list[Path], version: str | None
) -> None:
    """One MLflow run per task and date (a retry replaces an unfinished run, keeps a finished one)."""
    from include.preference.registry import log_report_run

    numeric = {k: float(v) for k, v in metrics.items() if isinstance(v, int | float) and v is not None}
    tags = {"model_version": version} if version else {}
    log_report_run(settings.mlflow_tracking_uri, EXPERIMENT, run_key, numeric, pngs, tags)
