"""The real REES46 clickstream sample through import and validation, against the real S3 server."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pandas as pd
import pytest

from include.preference import tasks
from include.preference.storage import PartitionRef, read_manifest, read_table

pytestmark = pytest.mark.integration

SAMPLE = Path(__file__).resolve().parents[3].parent / "shared" / "data" / "rees46_2019-10-01_head.csv.gz"
DAY = dt.date(2019, 10, 1)


def test_the_clickstream_sample_lands_and_splits_as_the_data_warrants(lake_env):
    assert SAMPLE.exists(), f"the shared sample is missing: {SAMPLE}"
    source = pd.read_csv(SAMPLE, dtype=str, keep_default_na=False)
    free = source["price"].astype(float) <= 0
    # A product whose latest price is zero is dropped from the catalogue; all its events are orphans.
    latest_price = source.groupby("product_id")["price"].last().astype(float)
    unpriced = set(latest_price[latest_price <= 0].index)

    tasks.land_raw_data(DAY, run_id="test", source="rees46", input_path=str(SAMPLE))
    result = tasks.validate_raw_data(DAY, run_id="test")

    events = result["tables"]["events"]
    assert events["rows_in"] == len(source) == events["validated"] + events["quarantined"]
    manifest = read_manifest(lake_env, PartitionRef("quarantine", "events", DAY))
    # A clickstream line repeated exactly (same second, user, product, type) is one event: the
    # repeats are quarantined as duplicate_line, the first copy kept.
    repeats = source.duplicated()
    expected = {
        "duplicate_line": int(repeats.sum()),
        "non_positive_price": int(free.sum()),
        "orphan_product": int(source["product_id"].isin(unpriced).sum()),
    }
    assert manifest.extra["by_rule_all"] == {rule: n for rule, n in expected.items() if n}
    validated = read_table(lake_env, PartitionRef("validated", "events", DAY)).to_pandas()
    counts = validated["event_type"].value_counts().to_dict()
    kept = source[~repeats & ~free & ~source["product_id"].isin(unpriced)]["event_type"].value_counts()
    assert counts == {"view": kept["view"], "add_to_cart": kept["cart"], "purchase": kept["purchase"]}
    orders = result["tables"]["orders"]
    assert orders["rows_in"] == (source["event_type"] == "purchase").sum()
    products = read_table(lake_env, PartitionRef("validated", "products", DAY)).to_pandas()
    with_code = products["category_path"].dropna()
    assert len(with_code) > 0 and with_code.str.contains("/").any() and not with_code.str.contains(r"\.").any()
