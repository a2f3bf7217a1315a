"""Several days of a history file validated in one run read exactly like each day validated alone.

Real data: a stretch of the shared Online Retail sample, through its importer. The stretch holds the
day with the most cancellations, so rows are quarantined, and a day without invoices (closed).
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pandas as pd
import pytest

from include.preference.sources import file_importer
from include.preference.sources.files import DAY
from include.preference.sources.online_retail import read_invoices
from include.preference.validation import validate_day, validate_days

pytestmark = [pytest.mark.unit, pytest.mark.slow]

SAMPLE = Path(__file__).resolve().parents[3].parent / "shared" / "data" / "online_retail_dev.csv.gz"
STRETCH = 6


@pytest.fixture(scope="module")
def stretch() -> tuple[dict[dt.date, dict[str, pd.DataFrame]], frozenset[dt.date]]:
    assert SAMPLE.exists(), f"the shared sample is missing: {SAMPLE}"
    invoices = read_invoices(SAMPLE)
    cancelled = invoices[invoices["InvoiceNo"].str.startswith("C")].groupby(DAY).size()
    busiest = cancelled.idxmax()
    present = set(invoices[DAY])
    # A stretch around that day that includes a closed day (no invoices), if the file has one near.
    start = busiest - dt.timedelta(days=STRETCH - 1)
    for offset in range(STRETCH):
        days = [start + dt.timedelta(days=offset + i) for i in range(STRETCH)]
        if any(d not in present for d in days) and days[0] >= min(present):
            break
    importer = file_importer("online_retail")
    raw, closed = {}, set()
    for day in days:
        tables, facts = importer(SAMPLE, day)
        raw[day] = tables
        if facts.get("closed_day"):
            closed.add(day)
    return raw, frozenset(closed)


def test_each_days_share_equals_that_day_validated_alone(stretch):
    raw, closed = stretch
    assert closed, "the stretch should hold a closed day"
    together = validate_days(raw, closed_days=closed)
    assert together.blocking == []
    quarantined = 0
    for day, tables in raw.items():
        alone = validate_day(day, tables, None, closed_day=day in closed)
        share = together.day(day)
        assert share.blocking == alone.blocking == []
        for name, outcome in alone.tables.items():
            mine = share.tables[name]
            pd.testing.assert_frame_equal(mine.validated, outcome.validated, check_dtype=True)
            assert mine.by_rule == outcome.by_rule and mine.by_rule_all == outcome.by_rule_all, (day, name)
            # The same rows quarantined under the same rules (row numbers count within each run).
            pd.testing.assert_frame_equal(mine.quarantine.drop(columns="_row"), outcome.quarantine.drop(columns="_row"))
            assert mine.rows_in == outcome.rows_in == len(tables[name])
            quarantined += len(outcome.quarantine)
    assert quarantined > 0  # the stretch exercises the row rules


def test_a_broken_day_is_named_and_its_neighbours_stay_clean(stretch):
    raw, closed = stretch
    open_days = [d for d in raw if d not in closed]
    broken = open_days[len(open_days) // 2]
    orders = raw[broken]["orders"]
    tables = {day: dict(t) for day, t in raw.items()}
    tables[broken]["orders"] = pd.concat([orders, orders.iloc[:2]], ignore_index=True)  # two lines twice
    together = validate_days(tables, closed_days=closed)
    failures = [b for b in together.blocking if b.table == "orders"]
    assert [(b.rule, b.days, b.count) for b in failures] == [("duplicate_keys", (broken.isoformat(),), 4)]
    assert f"orders: duplicate_keys (4) on {broken.isoformat()}" in failures[0].describe()
    for day in raw:
        assert (together.day(day).blocking != []) == (day == broken)


def test_an_open_day_without_rows_is_named(stretch):
    raw, closed = stretch
    open_days = [d for d in raw if d not in closed]
    empty = open_days[0]
    tables = {day: dict(t) for day, t in raw.items()}
    for name in ("orders", "events"):
        tables[empty][name] = tables[empty][name].iloc[0:0]
    together = validate_days(tables, closed_days=closed)
    assert {(b.table, b.rule, b.days) for b in together.blocking} == {
        ("orders", "empty_day", (empty.isoformat(),)),
        ("events", "empty_day", (empty.isoformat(),)),
    }
    # Told that it was closed, the same day passes.
    assert validate_days(tables, closed_days=closed | {empty}).blocking == []
