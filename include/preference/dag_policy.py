"""Defaults every DAG of this project shares (plain values: no Airflow import, cheap at parse time)."""

from __future__ import annotations

import datetime as dt

OWNER = "customer-preference"
# Fixed, timezone-aware start: the first day the marketplace has data (the generator's default epoch).
START_DATE = dt.datetime(2025, 1, 1, tzinfo=dt.UTC)

DEFAULT_ARGS: dict[str, object] = {
    "owner": OWNER,
    "retries": 3,
    "retry_delay": dt.timedelta(minutes=1),
    "retry_exponential_backoff": 2.0,
    "max_retry_delay": dt.timedelta(minutes=20),
    "execution_timeout": dt.timedelta(minutes=30),
}

# Failures that a retry cannot fix: the task fails at once instead of retrying with backoff.
# Dotted paths, so DAG files name them without importing them at parse time.
FAIL_FAST_ERRORS: tuple[str, ...] = (
    "include.preference.errors.ConfigError",
    "include.preference.errors.StorageAuthError",
    "include.preference.errors.MissingLogicalDate",
    "include.preference.errors.ValidationBlocked",
    "include.preference.errors.SourceFormatError",
)
FAIL_FAST_REASON = "configuration, credentials or the data itself are wrong; retrying cannot help"


# Airflow pools the DAGs use: name -> (slots, description). Training holds a GPU for its duration;
# one slot per GPU worker (one here).
POOLS = {"gpu": (1, "GPU training slots: one per GPU worker (tasks on queue 'gpu')")}

# What the trigger form shows for each source.
SOURCE_LABELS = {
    "synthetic": "synthetic marketplace",
    "online_retail": "Online Retail invoice file",
    "rees46": "REES46 clickstream file",
    "mapped": "CSV or Parquet files with a mapping file",
}
