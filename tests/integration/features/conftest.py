"""Helpers of the feature tests (the feature chain itself is in ``tests/integration/conftest.py``)."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pandas as pd
import pyarrow.parquet as pq

from include.preference.features.build import partition_dir
from tests.integration.conftest import LAST, copy_validated

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
    keys = [c for c in ("customer_id", "product_id", "category") if c in frame.columns]
    return frame.sort_values(keys).reset_index(drop=True)


__all__ = ["LAST", "TABLES", "copy_validated", "read"]
