"""Task implementations: what a DAG task calls, with plain arguments, runnable from a CLI or a test.

Each function reads the settings from the environment at call time (never at import), works on one
logical date and returns a small JSON-able dict (URIs, counts) for XCom.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Mapping
from typing import Any

from include.preference.config import Settings, load_settings
from include.preference.errors import MissingLogicalDate
from include.preference.storage import ObjectStore

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
    date: dt.date, *, run_id: str, source: str = "synthetic", generator: Mapping[str, Any] | None = None
) -> dict[str, Any]:
    """Land the raw partitions of ``date`` from ``source``.

    Args:
        date: the logical date.
        run_id: the Airflow run id, recorded in the manifests.
        source: ``synthetic`` (more sources arrive with the importers).
        generator: overrides of the synthetic generator's settings (seed, customers, ...).
    """
    from include.preference.sources import land_synthetic_day
    from include.preference.sources.synthetic import SyntheticConfig

    settings = load_settings()
    store = open_store(settings)
    if source != "synthetic":
        raise ValueError(f"unknown source {source!r}; available: synthetic")
    config = SyntheticConfig.from_env(**dict(generator or {}))
    tables = land_synthetic_day(store, date, config, run_id=run_id, code_version=settings.code_version)
    return {"date": date.isoformat(), "source": source, "tables": tables}
