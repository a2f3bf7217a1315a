"""Sources that land a logical date's raw partitions in the lake."""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from include.preference.schema import TABLES
from include.preference.sources.synthetic import SyntheticConfig, generate_day
from include.preference.storage import ObjectStore, PartitionRef, publish_table

if TYPE_CHECKING:
    import pandas as pd
    import pyarrow as pa

log = logging.getLogger(__name__)

RAW_TABLES = tuple(TABLES)
FILE_SOURCES = ("online_retail", "rees46", "mapped")
SOURCES = ("synthetic", *FILE_SOURCES)


def land_synthetic_day(
    store: ObjectStore,
    date: dt.date,
    config: SyntheticConfig,
    *,
    run_id: str,
    code_version: str,
) -> dict[str, dict[str, Any]]:
    """Generate one day of the synthetic marketplace and publish it as ``raw/<table>/dt=<date>/``.

    Idempotent: the same config and date publish the same bytes, so a rerun replaces the day's
    partitions with identical content.

    Returns:
        Per table: the partition URI, its row count and its version.
    """
    extra = {"source": "synthetic", "generator": config.as_dict()}
    landed = _publish_raw(store, date, generate_day(config, date), run_id, code_version, extra)
    log.info("landed synthetic day %s: %s", date, {k: v["rows"] for k, v in landed.items()})
    return landed


def _publish_raw(
    store: ObjectStore,
    date: dt.date,
    tables: dict[str, "pa.Table"],
    run_id: str,
    code_version: str,
    extra: dict[str, Any],
) -> dict[str, dict[str, Any]]:
    """Publish every raw table of a day; per table its URI, row count and version."""
    landed: dict[str, dict[str, Any]] = {}
    for name in RAW_TABLES:
        ref = PartitionRef("raw", name, date)
        manifest = publish_table(store, ref, tables[name], run_id=run_id, code_version=code_version, extra=extra)
        landed[name] = {"uri": store.uri(ref.prefix), "rows": manifest.row_count, "version": manifest.version}
    return landed


def file_importer(source: str) -> Callable[[Path, dt.date], tuple[dict[str, "pd.DataFrame"], dict[str, object]]]:
    """The importer of a file source: ``(path, day) -> (raw tables, facts for the manifests)``."""
    from include.preference.sources import mapped, online_retail, rees46

    importers = {"online_retail": online_retail.land_tables, "rees46": rees46.land_tables, "mapped": mapped.land_tables}
    if source not in importers:
        raise ValueError(f"unknown file source {source!r}; available: {', '.join(importers)}")
    return importers[source]


def land_file_day(
    store: ObjectStore,
    source: str,
    path: Path,
    date: dt.date,
    *,
    run_id: str,
    code_version: str,
) -> dict[str, dict[str, Any]]:
    """Land ``date``'s rows of an input file as ``raw/<table>/dt=<date>/`` (values kept as text).

    Raises:
        SourceFormatError: the file cannot be read by the source's importer.
    """
    import pyarrow as pa

    frames, facts = file_importer(source)(path, date)
    tables = {name: pa.Table.from_pandas(frames[name].astype("string"), preserve_index=False) for name in RAW_TABLES}
    landed = _publish_raw(store, date, tables, run_id, code_version, facts)
    log.info("landed %s day %s from %s: %s", source, date, path.name, {k: v["rows"] for k, v in landed.items()})
    return landed
