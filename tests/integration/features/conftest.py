"""Helpers of the feature tests (the feature chain itself is in ``tests/integration/conftest.py``)."""

from __future__ import annotations

import datetime as dt

import pandas as pd

from include.preference.storage import PartitionRef
from include.preference.storage.spark_lake import SparkLake
from tests.integration.conftest import LAST

TABLES = (
    "customers",
    "products",
    "state_customers",
    "state_products",
    "state_pairs",
    "state_customer_categories",
)


def read(lake: SparkLake, table: str, day: dt.date, layer: str = "features") -> pd.DataFrame:
    frame = lake.read_arrow(PartitionRef(layer, table, day)).to_pandas()
    keys = [c for c in ("customer_id", "product_id", "category") if c in frame.columns]
    return frame.sort_values(keys).reset_index(drop=True)


__all__ = ["LAST", "TABLES", "read"]
