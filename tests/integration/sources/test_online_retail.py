"""The real UCI Online Retail sample through import and validation, against the real S3 server.

The expected quarantine counts are computed here from the CSV with plain pandas, independently
of the importer and the suites.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pandas as pd
import pytest

from include.preference import tasks
from include.preference.storage import PartitionRef, read_manifest, read_table

pytestmark = pytest.mark.integration

SAMPLE = Path(__file__).resolve().parents[3].parent / "shared" / "data" / "online_retail_dev.csv.gz"


@pytest.fixture(scope="module")
def lines() -> pd.DataFrame:
    assert SAMPLE.exists(), f"the shared sample is missing: {SAMPLE}"
    frame = pd.read_csv(SAMPLE, dtype=str, keep_default_na=False)
    frame["day"] = pd.to_datetime(frame["InvoiceDate"]).dt.date
    frame["quantity"] = frame["Quantity"].astype(int)
    frame["price"] = frame["UnitPrice"].astype(float)
    frame["cancelled"] = frame["InvoiceNo"].str.startswith("C")
    # In this file every real product code starts with a digit; postage, fees and manual lines do not.
    frame["service_code"] = ~frame["StockCode"].str[0].str.isdigit()
    return frame


def pick_days(lines: pd.DataFrame) -> list[dt.date]:
    per_day = lines.groupby("day").agg(
        cancelled=("cancelled", "sum"), service=("service_code", "sum"), free=("price", lambda p: (p <= 0).sum())
    )
    return sorted({per_day["cancelled"].idxmax(), per_day["service"].idxmax(), per_day["free"].idxmax()})


def expected_order_rules(lines: pd.DataFrame, day: dt.date) -> dict[str, int]:
    upto = lines[lines["day"] <= day]
    priced = upto[upto["price"] > 0].groupby("StockCode").size()
    bad_products = set(upto.loc[upto["service_code"], "StockCode"]) | (set(upto["StockCode"]) - set(priced.index))
    today = lines[lines["day"] == day]
    counts = {
        "cancellation": int(today["cancelled"].sum()),
        "non_positive_quantity": int((today["quantity"] <= 0).sum()),
        "non_positive_price": int((today["price"] <= 0).sum()),
        "non_product_code": int(today["service_code"].sum()),
        "orphan_product": int(today["StockCode"].isin(bad_products).sum()),
        "missing_required": int((today["CustomerID"].str.strip() == "").sum()),
    }
    return {rule: count for rule, count in counts.items() if count}


def test_real_invoice_days_are_split_exactly_as_the_data_warrants(lake_env, lines):
    store = lake_env
    days = pick_days(lines)
    assert len(days) >= 2
    for day in days:
        tasks.land_raw_data(day, run_id="test", source="online_retail", input_path=str(SAMPLE))
        result = tasks.validate_raw_data(day, run_id="test")
        orders = result["tables"]["orders"]
        today = lines[lines["day"] == day]
        assert orders["rows_in"] == len(today)
        assert orders["validated"] + orders["quarantined"] == len(today)
        manifest = read_manifest(store, PartitionRef("quarantine", "orders", day))
        assert manifest.extra["by_rule_all"] == expected_order_rules(lines, day), day
        quarantined = read_table(store, PartitionRef("quarantine", "orders", day)).to_pandas()
        cancelled = quarantined[quarantined["rule"] == "cancellation"]
        assert cancelled["order_id"].str.startswith("C").all()
        assert set(quarantined["_source_line"].astype(int)) <= set(today.index + 2)  # lineage back to the file
        valid = read_table(store, PartitionRef("validated", "orders", day)).to_pandas()
        assert (valid["quantity"] > 0).all() and (valid["unit_price"] > 0).all()
        assert not valid["is_cancellation"].any()
        assert valid["customer_id"].str.fullmatch(r"\d+").all()  # "17850.0" normalised


def test_every_line_of_the_file_is_assigned_to_exactly_one_day():
    from include.preference.sources.online_retail import read_invoices

    invoices = read_invoices(SAMPLE)
    assert invoices["_day"].notna().all()
    assert invoices.groupby("_day").size().sum() == len(invoices) == 86_885


def test_a_day_without_trading_inside_the_file_is_landed_empty_and_closed(lines):
    from include.preference.sources.online_retail import land_tables

    trading = set(lines["day"])
    first, last = min(trading), max(trading)
    closed = next(
        first + dt.timedelta(days=i) for i in range((last - first).days) if first + dt.timedelta(days=i) not in trading
    )
    tables, facts = land_tables(SAMPLE, closed)
    assert facts["closed_day"] is True and len(tables["orders"]) == 0
    assert len(tables["products"]) > 0  # the catalogue seen so far is still there
