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
are all in that space.

Plots are also published under ``reports/{segment_map_<entity>,segments_<entity>,rfm}/dt=D/`` and
logged to MLflow (one run per task and date in the ``customer-preference-segments`` experiment).
"""

from __future__ import annotations

import datetime as dt
import json
import logging
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from include.preference.config import Settings
from include.preference.segments.assign import segment_space
from include.preference.storage import (
    ObjectStore,
    PartFile,
    PartitionRef,
    list_partitions,
    publish_directory,
    publish_files,
    read_file,
    read_manifest,
    read_table,
    require_manifest,
    scratch_directory,
    stage_partition,
    upstream_entry,
)

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


def latest_centroids(store: ObjectStore, entity: str, day: dt.date) -> PartitionRef | None:
    """The latest centroid refresh on or before ``day``."""
    days = [d for d in list_partitions(store, SEGMENTS, f"centroids_{entity}") if d <= day]
    return PartitionRef(SEGMENTS, f"centroids_{entity}", days[-1]) if days else None


def _vectors(table: Any, column: str = "embedding") -> np.ndarray:
    values = table.column(column).combine_chunks()
    flat = values.flatten().to_numpy(zero_copy_only=False)
    return flat.reshape(len(values), -1).astype(np.float32) if len(values) else np.zeros((0, 0), np.float32)


def _strata(store: ObjectStore, entity: str, day: dt.date) -> tuple[pd.DataFrame, str, list[dict[str, Any]]]:
    """(id, stratum) of every row: the RFM tier for customers when published, else the top category."""
    _, key = _entity(entity)
    upstream: list[dict[str, Any]] = []
    rfm = PartitionRef(SEGMENTS, "rfm", day)
    if entity == "customers" and (manifest := read_manifest(store, rfm)) is not None:
        upstream.append(upstream_entry(store, rfm, manifest))
        frame = read_table(store, rfm, columns=[key, "tier"]).to_pandas().rename(columns={"tier": "stratum"})
        return frame, "rfm_tier", upstream
    ref = PartitionRef("features", entity, day)
    upstream.append(upstream_entry(store, ref, require_manifest(store, ref)))
    column = f"{_entity(entity)[0]}_top_category"
    frame = read_table(store, ref, columns=[key, column]).to_pandas().rename(columns={column: "stratum"})
    return frame, "top_category", upstream


def stratified_sample(spark: Any, frame: pd.DataFrame, per_stratum: int, seed: int) -> pd.DataFrame:
    """About ``per_stratum`` rows of each stratum (Spark ``sampleBy``; every row of a small stratum)."""
    counts = frame["stratum"].value_counts()
    fractions = {str(s): min(1.0, per_stratum / n) for s, n in counts.items()}
    sampled = spark.createDataFrame(frame.astype({"stratum": str})).sampleBy("stratum", fractions, seed)
    return sampled.toPandas()


def run_refresh_segments(
    store: ObjectStore, settings: Settings, day: dt.date, entity: str, *, run_id: str
) -> dict[str, Any]:
    """Discover clusters on a stratified sample when the champion changed since the latest centroids."""
    import pyarrow as pa

    from include.preference.segments import plots
    from include.preference.segments.cluster import discover, match_ids
    from include.preference.spark import spark_session
    from include.preference.storage.partitions import parquet_bytes

    _, key = _entity(entity)
    ref = embeddings_ref(entity, day)
    manifest = require_manifest(store, ref)
    version = str(manifest.extra.get("model_version"))
    previous = latest_centroids(store, entity, day - dt.timedelta(days=1))
    previous_manifest = read_manifest(store, previous) if previous else None
    if (
        previous is not None
        and previous_manifest is not None
        and str(previous_manifest.extra.get("model_version")) == version
    ):
        return {
            "date": day.isoformat(),
            "skipped": f"champion v{version} unchanged since the centroids of {previous.date}",
        }

    table = read_table(store, ref, columns=[key, "embedding"])
    strata, strata_name, upstream = _strata(store, entity, day)
    upstream.append(upstream_entry(store, ref, manifest))
    ids = pd.DataFrame({key: table.column(key).to_pylist(), "_row": np.arange(table.num_rows)})
    rows = ids.merge(strata, on=key, how="left").fillna({"stratum": "unknown"})
    spark = spark_session("refresh_segments")
    sample = stratified_sample(spark, rows, settings.segment_sample_per_stratum, settings.sampling_seed)
    sample = sample.sort_values(key).reset_index(drop=True)
    space = segment_space(_vectors(table))
    vectors = space[sample["_row"].to_numpy()]
    found = discover(vectors, seed=settings.sampling_seed)

    # Stable ids: previous clusters, re-expressed in today's embedding space as the mean embedding
    # of their members of the previous day, matched to the new centroids (Hungarian, L1).
    cluster_ids = found.cluster_ids
    matched_against = None
    if previous is not None:
        before = _previous_assignments(store, entity, day)
        if before is not None:
            joined = ids.merge(before, on=key)
            if len(joined):
                old_ids = np.array(sorted(joined["cluster_id"].unique()))
                old = np.stack([space[joined[joined["cluster_id"] == c]["_row"]].mean(axis=0) for c in old_ids])
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
    metrics = {
        "alternative_inputs": alternative,
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
        title = f"{entity}: t-SNE of the champion v{version} embeddings, {day}"
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
            extra={"model_version": version, "clusters": len(centroids), "silhouette": found.silhouette},
        )
        _report(store, settings, f"segment_map_{entity}", day, run_id, [png], {"metrics.json": metrics}, upstream)
        _log_mlflow(settings, f"refresh_segments/{entity}/{day}", metrics, [png], version)
    return {
        "date": day.isoformat(),
        **{k: metrics[k] for k in ("model_version", "clusters", "silhouette", "davies_bouldin", "noise_share")},
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


def _previous_assignments(store: ObjectStore, entity: str, day: dt.date) -> pd.DataFrame | None:
    days = [d for d in list_partitions(store, SEGMENTS, entity) if d < day]
    if not days:
        return None
    _, key = _entity(entity)
    return read_table(store, PartitionRef(SEGMENTS, entity, days[-1]), columns=[key, "cluster_id"]).to_pandas()


def assignment_batches(centroids: np.ndarray, ids: np.ndarray, key: str, tag: dict[str, str]):
    """The ``mapInArrow`` function: (key, embedding) -> (key, cluster_id, l1_distance, tags...)."""
    import pyarrow as pa

    from include.preference.segments.assign import nearest_l1

    def run(batches):
        for batch in batches:
            values = batch.column("embedding")
            flat = values.flatten().to_numpy(zero_copy_only=False).astype(np.float32, copy=False)
            points = (
                segment_space(flat.reshape(batch.num_rows, -1))
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


def assign_frame(frame: Any, centroids: np.ndarray, ids: np.ndarray, key: str, tag: dict[str, str]) -> Any:
    """Every row of an embeddings DataFrame assigned to its nearest centroid (L1), in Spark."""
    tags = "".join(f", {name} string" for name in tag)
    schema = f"{key} string, cluster_id long, l1_distance float{tags}"
    return frame.select(key, "embedding").mapInArrow(assignment_batches(centroids, ids, key, tag), schema)


def migration(before: pd.DataFrame | None, after: pd.DataFrame, key: str) -> pd.DataFrame:
    """Counts from the previous day's cluster to today's (``new``: not there before; ``gone``: not today)."""
    if before is None:
        before = pd.DataFrame({key: pd.Series(dtype=str), "cluster_id": pd.Series(dtype=np.int64)})
    joined = before[[key, "cluster_id"]].merge(
        after[[key, "cluster_id"]], on=key, how="outer", suffixes=("_from", "_to")
    )
    as_label = lambda column, missing: joined[column].map(lambda v: missing if pd.isna(v) else str(int(v)))  # noqa: E731
    table = pd.DataFrame({"from": as_label("cluster_id_from", NEW), "to": as_label("cluster_id_to", GONE)})
    return table.groupby(["from", "to"]).size().rename("count").reset_index()


def run_assign_segments(
    store: ObjectStore, settings: Settings, day: dt.date, entity: str, *, run_id: str
) -> dict[str, Any]:
    """Assign every embedded row of ``day`` to the nearest centroid of the same model version."""
    from include.preference.errors import PartitionNotFound
    from include.preference.features.build import write_table
    from include.preference.segments import plots
    from include.preference.spark import spark_session

    _, key = _entity(entity)
    ref = embeddings_ref(entity, day)
    manifest = require_manifest(store, ref)
    version = str(manifest.extra.get("model_version"))
    centroids_ref = latest_centroids(store, entity, day)
    centroids_manifest = read_manifest(store, centroids_ref) if centroids_ref else None
    if (
        centroids_ref is None
        or centroids_manifest is None
        or str(centroids_manifest.extra.get("model_version")) != version
    ):
        raise PartitionNotFound(
            f"no centroids of model v{version} for {entity} on or before {day}; run refresh_segments for {day}"
        )
    centroids = json.loads(read_file(store, centroids_ref, "centroids.json"))
    matrix = np.asarray([c["centroid"] for c in centroids], dtype=np.float32)
    ids = np.asarray([c["cluster_id"] for c in centroids], dtype=np.int64)
    upstream = [upstream_entry(store, ref, manifest), upstream_entry(store, centroids_ref, centroids_manifest)]
    tag = {"model_version": version, "centroids_date": centroids_ref.date.isoformat()}

    with scratch_directory(settings.scratch_dir, f"assign-{entity}-{day}") as root:
        local = stage_partition(store, ref, root, manifest)
        spark = spark_session("assign_segments")
        out = root / "out"
        rows = write_table(
            assign_frame(spark.read.parquet(str(local)), matrix, ids, key, tag), out / "assignments", [key]
        )
        today = pd.read_parquet(out / "assignments", columns=[key, "cluster_id", "l1_distance"])
        summary = (
            today.groupby("cluster_id")
            .agg(count=(key, "size"), mean_l1_distance=("l1_distance", "mean"))
            .reindex(ids, fill_value=0)
            .reset_index()
        )
        summary["share"] = summary["count"] / max(rows, 1)
        moved = migration(_previous_assignments(store, entity, day), today, key)
        history = _size_history(store, entity, day, summary)
        (out / "centroids.json").write_text(json.dumps(centroids))
        (out / "summary.json").write_text(json.dumps(summary.to_dict(orient="records"), indent=2))
        (out / "migration.json").write_text(json.dumps(moved.to_dict(orient="records"), indent=2))
        labels_from = sorted(set(moved["from"]), key=_label_order)
        labels_to = sorted(set(moved["to"]), key=_label_order)
        grid = moved.pivot_table(index="from", columns="to", values="count", fill_value=0).reindex(
            index=labels_from, columns=labels_to, fill_value=0
        )
        pngs = [
            plots.sizes_over_time(history, out / f"sizes_{entity}.png", f"{entity}: cluster sizes over time"),
            plots.migration_heatmap(
                labels_from,
                labels_to,
                grid.to_numpy(),
                out / f"migration_{entity}.png",
                f"{entity}: migration to {day}",
            ),
        ]
        published = publish_directory(
            store,
            PartitionRef(SEGMENTS, entity, day),
            out,
            run_id=run_id,
            code_version=settings.code_version,
            upstream=upstream,
            rows={"centroids.json": len(centroids), "summary.json": len(summary), "migration.json": len(moved)},
            extra={
                "model_version": version,
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
