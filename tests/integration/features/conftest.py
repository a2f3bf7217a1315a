"""A feature chain shared by the feature tests: built once per session on the validated history."""

from __future__ import annotations

import datetime as dt
import shutil
from pathlib import Path

import pandas as pd
import pyarrow.parquet as pq
import pytest

from include.preference.features.build import build_features, partition_dir

LAST = 33
TABLES = (
    "customers",
    "products",
    "state_customers",
    "state_products",
    "state_pairs",
    "state_customer_categories",
)


def read(root: Path, table: str, day: dt.date) -> pd.DataFrame:
    frame = pq.read_table(partition_dir(root, "features", table, day)).to_pandas()
    keys = [c for c in ("customer_id", "product_id", "top_category") if c in frame.columns]
    return frame.sort_values(keys).reset_index(drop=True)


def copy_validated(source: Path, target: Path) -> Path:
    shutil.copytree(source / "validated", target / "validated")
    return target


@pytest.fixture(scope="session")
def chain(validated_history, spark, tmp_path_factory):
    """A full build at day 28, then incremental days 29..34; and a full build of day 34 elsewhere.

    Day 34 is the last of the chain (``days[LAST]``); days 31..34 subtract days 1..4 from the
    30-day window and every incremental day subtracts one from the 7-day window.
    """
    source, days = validated_history
    root = copy_validated(source, tmp_path_factory.mktemp("chain"))
    runs = [build_features(spark, root, days[27], mode="full")]
    runs += [build_features(spark, root, day) for day in days[28 : LAST + 1]]
    full_root = copy_validated(source, tmp_path_factory.mktemp("full"))
    build_features(spark, full_root, days[LAST], mode="full")
    return root, full_root, days, runs
