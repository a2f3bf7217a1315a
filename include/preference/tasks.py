"""Task implementations: what a DAG task calls, with plain arguments, runnable from a CLI or a test.

Each function reads the settings from the environment at call time (never at import), works on one
logical date and returns a small JSON-able dict (URIs, counts) for XCom.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from include.preference.config import Settings, load_settings
from include.preference.errors import MissingLogicalDate
from include.preference.storage import ObjectStore

if TYPE_CHECKING:
    from include.preference.validation import TrailingStats

log = logging.getLogger(__name__)


def logical_day(data_interval_start: dt.datetime | None) -> dt.date:
    """The partition date of a run: the UTC date of its data interval start.

    Raises:
        MissingLogicalDate: the run has no data interval (a manual run triggered without a logical date).
    """
    if data_interval_start is None:
        raise MissingLogicalDate(
            "this run has no logical date; trigger it with a logical date (or use a backfill) so the "
            "partition to write is known"
        )
    if data_interval_start.tzinfo is None:
        raise MissingLogicalDate(f"data_interval_start {data_interval_start} has no time zone; expected UTC")
    return data_interval_start.astimezone(dt.UTC).date()


def open_store(settings: Settings | None = None) -> ObjectStore:
    """The lake bucket from settings, checked: wrong keys or a missing server fail here, clearly."""
    settings = settings or load_settings()
    store = ObjectStore(settings.s3)
    store.check()
    return store


def land_raw_data(
    date: dt.date,
    *,
    run_id: str,
    source: str = "synthetic",
    generator: Mapping[str, Any] | None = None,
    input_path: str = "",
    date_order: str | None = None,
) -> dict[str, Any]:
    """Land the raw partitions of ``date`` from ``source``.

    Args:
        date: the logical date.
        run_id: the Airflow run id, recorded in the manifests.
        source: ``synthetic`` or a file source (``online_retail``).
        generator: overrides of the synthetic generator's settings (seed, customers, ...).
        input_path: the file a file source reads: a local path, or an ``s3://`` URI in the lake.
        date_order: ``day_first`` or ``month_first`` for a file whose numeric dates cannot tell
            (``None``: ``PREFERENCE_DATE_ORDER``).
    """

    from include.preference.errors import ConfigError
    from include.preference.sources import FILE_SOURCES, SOURCES, land_file_day, land_synthetic_day
    from include.preference.sources.files import dates_read_as
    from include.preference.sources.synthetic import SyntheticConfig

    settings = load_settings()
    store = open_store(settings)
    if source not in SOURCES:
        raise ConfigError(f"unknown source {source!r}; available: {', '.join(SOURCES)}")
    if source in FILE_SOURCES:
        if not input_path:
            raise ConfigError(f"source {source!r} needs input_path (a local file or an s3:// URI)")
        # A mapping file names its data files relative to itself: fetch its folder with it.
        local = _local_input(store, input_path, settings.scratch_dir / "inputs", with_folder=source == "mapped")
        with dates_read_as(date_order):
            tables = land_file_day(store, source, local, date, run_id=run_id, code_version=settings.code_version)
    else:
        config = SyntheticConfig.from_env(**dict(generator or {}))
        tables = land_synthetic_day(store, date, config, run_id=run_id, code_version=settings.code_version)
    return {"date": date.isoformat(), "source": source, "tables": tables}


def _local_input(store: ObjectStore, input_path: str, cache: Path, with_folder: bool = False) -> Path:
    """A local copy of an input file: as is when local, downloaded when an s3:// URI.

    With ``with_folder``, every object beside the file (same prefix) comes along.
    """
    from include.preference.errors import ConfigError

    if not input_path.startswith("s3://"):
        path = Path(input_path)
        if not path.is_file():
            raise ConfigError(f"input_path {input_path} does not exist")
        return path
    bucket, _, key = input_path.removeprefix("s3://").partition("/")
    if bucket != store.bucket:
        raise ConfigError(f"input_path {input_path} is outside the lake bucket {store.bucket}")
    folder = key.rsplit("/", 1)[0] + "/" if "/" in key else ""
    for wanted in list(store.list_keys(folder)) if with_folder else [key]:
        store.get_file(wanted, cache / wanted)
    return cache / key


TRAILING_DAYS = 7


def _trailing_stats(store: ObjectStore, table: str, date: dt.date) -> "TrailingStats | None":
    """Row counts and last-row times of the latest validated days before ``date`` (closed days skipped)."""
    from include.preference.storage import PartitionRef, list_partitions, read_manifest
    from include.preference.validation import TrailingStats

    earlier = [d for d in list_partitions(store, "validated", table) if d < date][-TRAILING_DAYS:]
    counts, last_seconds = [], []
    p999: dict[str, list[float]] = {}
    for day in earlier:
        manifest = read_manifest(store, PartitionRef("validated", table, day))
        if manifest is None or manifest.extra.get("closed_day"):
            continue
        counts.append(int(manifest.extra.get("rows_in", manifest.row_count or 0)))
        if manifest.extra.get("last_seconds") is not None:
            last_seconds.append(float(manifest.extra["last_seconds"]))
        for column, value in (manifest.extra.get("p999") or {}).items():
            p999.setdefault(column, []).append(float(value))
    if not counts:
        return None
    return TrailingStats(tuple(counts), tuple(last_seconds), {c: tuple(v) for c, v in p999.items()})


def validate_raw_data(date: dt.date, *, run_id: str) -> dict[str, Any]:
    """Validate the day's raw partitions; publish validated, quarantine and the Data Docs report.

    Every raw row ends in ``validated/`` or ``quarantine/`` (with the rule it broke); the counts are
    in both manifests. The report is published first, so a blocked day still has one.

    Raises:
        ValidationBlocked: a blocking rule failed (names rule, count and the report's URI).
    """
    import json

    import pyarrow as pa

    from include.preference.errors import ValidationBlocked
    from include.preference.schema import TABLES
    from include.preference.storage import (
        PartFile,
        PartitionRef,
        publish_files,
        publish_table,
        read_table,
        require_manifest,
        scratch_directory,
        upstream_entry,
    )
    from include.preference.validation import Plausibility, validate_day

    settings = load_settings()
    store = open_store(settings)
    raw_refs = {table: PartitionRef("raw", table, date) for table in TABLES}
    raw_manifests = {table: require_manifest(store, ref) for table, ref in raw_refs.items()}
    closed_day = any(m.extra.get("closed_day") for m in raw_manifests.values())
    raw = {table: read_table(store, ref).to_pandas() for table, ref in raw_refs.items()}
    trailing = {table: stats for table in TABLES if (stats := _trailing_stats(store, table, date))}
    raw_upstream = {table: upstream_entry(store, ref, raw_manifests[table]) for table, ref in raw_refs.items()}
    upstream = list(raw_upstream.values())

    with scratch_directory(settings.scratch_dir, f"validation-{date}") as scratch:
        docs = scratch / "docs"
        plausibility = Plausibility(settings.max_quantity, settings.max_price, settings.plausibility_factor)
        result = validate_day(date, raw, docs, trailing=trailing, closed_day=closed_day, plausibility=plausibility)
        summary = result.summary()
        report_ref = PartitionRef("reports", "validation", date)
        parts = [
            PartFile(p.relative_to(docs).as_posix(), p.read_bytes()) for p in sorted(docs.rglob("*")) if p.is_file()
        ]
        parts.append(PartFile("summary.json", json.dumps(summary, indent=2, sort_keys=True).encode()))
        report = publish_files(
            store,
            report_ref,
            parts,
            run_id=run_id,
            code_version=settings.code_version,
            upstream=upstream,
            extra={"blocked": summary["blocked"]},
        )
    report_uri = store.uri(f"{report_ref.prefix}{report.version}/index.html")
    log.info("validation report for %s: %s", date, report_uri)
    if result.blocking:
        failures = "; ".join(b.describe() for b in result.blocking)
        raise ValidationBlocked(
            f"validation blocked {date}: {failures}. Nothing was published to validated/. "
            f"Report: {report_uri} (summary.json beside it)"
        )

    tables: dict[str, Any] = {}
    for name, outcome in result.tables.items():
        counts = outcome.summary()
        extra = {
            "rows_in": outcome.rows_in,
            "validated": len(outcome.validated),
            "quarantined": len(outcome.quarantine),
            "by_rule": outcome.by_rule,
            "by_rule_all": outcome.by_rule_all,
            "closed_day": closed_day,
            "last_seconds": outcome.last_seconds,
            "p999": outcome.p999,
            "report": report_uri,
        }
        table_upstream = [raw_upstream[name]]
        published = {
            "quarantine": pa.Table.from_pandas(outcome.quarantine, preserve_index=False),
            "validated": outcome.validated_table(),
        }
        for layer, data in published.items():  # quarantine first: validated/ is what readers wait for
            publish_table(
                store,
                PartitionRef(layer, name, date),
                data,
                run_id=run_id,
                code_version=settings.code_version,
                upstream=table_upstream,
                extra=extra,
            )
        tables[name] = {k: counts[k] for k in ("rows_in", "validated", "quarantined", "by_rule")}
    return {"date": date.isoformat(), "report": report_uri, "tables": tables}


def build_features(date: dt.date, *, run_id: str) -> dict[str, Any]:
    """Build the point-in-time features as of ``date`` (incremental when the previous state is intact).

    Publishes ``features/{daily_*,state_*,customers,products}/dt=<date>/``.
    """
    from include.preference.features.jobs import run_feature_build

    settings = load_settings()
    return run_feature_build(open_store(settings), settings, date, run_id=run_id)


def build_training_data(date: dt.date, *, run_id: str) -> dict[str, Any]:
    """Publish the training examples of the anchor whose label horizon ends on ``date``.

    Returns ``skipped`` with the reason when that anchor has no features or a horizon day is missing.
    """
    from include.preference.features.jobs import run_training_build

    settings = load_settings()
    return run_training_build(open_store(settings), settings, date, run_id=run_id)


def train_model(date: dt.date, *, run_id: str, backfill: bool) -> dict[str, Any]:
    """Train on the published training partitions, evaluate on the holdout, register and gate.

    A backfill run registers its model but never moves ``champion``. Returns ``skipped`` with the
    reason when the holdout anchor or any training anchor is not published yet.
    """
    import mlflow

    from include.preference.training.jobs import run_training_job

    settings = load_settings()
    mlflow.set_tracking_uri(settings.mlflow_tracking_uri)
    return run_training_job(open_store(settings), settings, date, run_id=run_id, backfill=backfill)


def train_profile_model(date: dt.date, *, run_id: str, backfill: bool) -> dict[str, Any]:
    """Train the customer profile autoencoder on the same partitions, register and gate it.

    A backfill run registers its model but never moves ``champion``; ``skipped`` with the reason
    when the training partitions are not published yet.
    """
    import mlflow

    from include.preference.training.profiles import run_profile_training_job

    settings = load_settings()
    mlflow.set_tracking_uri(settings.mlflow_tracking_uri)
    return run_profile_training_job(open_store(settings), settings, date, run_id=run_id, backfill=backfill)


def score_profiles(date: dt.date, *, run_id: str) -> dict[str, Any]:
    """Every customer's profile and reconstruction error with the profile model that was champion
    on ``date`` (``skipped`` without one)."""
    from include.preference.scoring.jobs import run_profile_scoring

    settings = load_settings()
    return run_profile_scoring(open_store(settings), settings, date, run_id=run_id)


def score_products(date: dt.date, *, run_id: str) -> dict[str, Any]:
    """Product embeddings with the model that was champion on ``date`` (``skipped`` without one)."""
    from include.preference.scoring.jobs import run_product_scoring

    settings = load_settings()
    return run_product_scoring(open_store(settings), settings, date, run_id=run_id)


def score_customers(date: dt.date, *, run_id: str) -> dict[str, Any]:
    """Customer embeddings, candidate propensities and top-K recommendations (after score_products)."""
    from include.preference.scoring.jobs import run_customer_scoring

    settings = load_settings()
    return run_customer_scoring(open_store(settings), settings, date, run_id=run_id)


def refresh_segments(date: dt.date, entity: str, *, run_id: str) -> dict[str, Any]:
    """New centroids (t-SNE + DBSCAN on a stratified sample) when the champion changed; else ``skipped``."""
    from include.preference.segments.jobs import run_refresh_segments

    settings = load_settings()
    return run_refresh_segments(open_store(settings), settings, date, entity, run_id=run_id)


def assign_segments(date: dt.date, entity: str, *, run_id: str) -> dict[str, Any]:
    """Every customer or product to its nearest centroid (L1); summary and migration."""
    from include.preference.segments.jobs import run_assign_segments

    settings = load_settings()
    return run_assign_segments(open_store(settings), settings, date, entity, run_id=run_id)


def compute_rfm(date: dt.date, *, run_id: str) -> dict[str, Any]:
    """RFM value tiers of the customers as of ``date``."""
    from include.preference.segments.jobs import run_compute_rfm

    settings = load_settings()
    return run_compute_rfm(open_store(settings), settings, date, run_id=run_id)


def has_embeddings(date: dt.date) -> bool:
    """Whether both embedding partitions of ``date`` are published (scoring ran with a champion)."""
    from include.preference.storage import PartitionRef, read_manifest

    store = open_store()
    return all(read_manifest(store, PartitionRef("scores", f"{e}_embeddings", date)) for e in ("customer", "product"))


def has_segment_inputs(date: dt.date) -> bool:
    """Whether what the segment tasks read on ``date`` is published: both embedding partitions, and
    the customer profiles when customers are segmented on them (``PREFERENCE_SEGMENT_SPACE``)."""
    from include.preference.storage import PartitionRef, read_manifest

    settings = load_settings()
    if settings.segment_space == "profile":
        profiles = PartitionRef("scores", "customer_profiles", date)
        if read_manifest(open_store(settings), profiles) is None:
            return False
    return has_embeddings(date)


def embed_reviews(date: dt.date, *, run_id: str) -> dict[str, Any]:
    """Embed the day's review texts (all-MiniLM-L6-v2) and publish the customers' text profiles."""
    from include.preference.text.reviews import run_review_embeddings

    settings = load_settings()
    return run_review_embeddings(open_store(settings), settings, date, run_id=run_id)
