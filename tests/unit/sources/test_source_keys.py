"""Source keys from content: a line's identity is a digest of its fields, its line number is lineage.

So a line keeps its key wherever it sits in whichever file, exact repeats and conflicting versions of
one event meet under one key, and validation's rules see them (README, validation section).
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest

from include.preference.sources import mapped, online_retail, rees46
from include.preference.validation import validate_day
from tests.support.drops import ORDERS_MAPPING

pytestmark = pytest.mark.unit

REES_HEADER = "event_time,event_type,product_id,category_id,category_code,brand,price,user_id,user_session"
REES_LINES = [
    "2019-10-01 00:00:00 UTC,view,44600062,2103807459595387724,,shiseido,35.79,541312140,72d76fde",
    "2019-10-01 00:00:01 UTC,view,3900821,2053013552326770905,appliances.environment,aqua,33.20,554748717,9333dfbd",
    "2019-10-01 00:00:02 UTC,cart,17200506,2053013559792632471,furniture.bedroom,,543.10,519107250,566511c2",
    "2019-10-01 00:00:04 UTC,purchase,1307067,2053013558920217191,computers.notebook,lenovo,251.74,550050854,7c90fc70",
]
REES_DAY = dt.date(2019, 10, 1)
RETAIL_HEADER = "InvoiceNo,StockCode,Description,Quantity,InvoiceDate,UnitPrice,CustomerID,Country"
RETAIL_LINES = [
    "536365,85123A,WHITE HANGING HEART T-LIGHT HOLDER,6,2010-12-01 08:26:00,2.55,17850.0,United Kingdom",
    "536365,71053,WHITE METAL LANTERN,6,2010-12-01 08:26:00,3.39,17850.0,United Kingdom",
    "536366,22633,HAND WARMER UNION JACK,6,2010-12-01 08:28:00,1.85,17850.0,United Kingdom",
]
RETAIL_DAY = dt.date(2010, 12, 1)


def write(tmp_path: Path, name: str, header: str, lines: list[str]) -> Path:
    path = tmp_path / name
    path.write_text("\n".join([header, *lines]) + "\n")
    return path


def rees_events(tmp_path: Path, name: str, lines: list[str]):
    return rees46.land_tables(write(tmp_path, name, REES_HEADER, lines), REES_DAY)[0]["events"]


def test_a_clickstream_event_keeps_its_key_in_any_file_at_any_line(tmp_path):
    first = rees_events(tmp_path, "a.csv", REES_LINES)
    moved = rees_events(tmp_path, "other-name.csv", list(reversed(REES_LINES)))
    assert first["event_id"].is_unique and len(first) == len(REES_LINES)
    by_line = dict(zip(first["_source_line"], first["event_id"], strict=True))
    assert dict(zip(moved["_source_line"], moved["event_id"], strict=True)) == {
        len(REES_LINES) + 3 - line: key for line, key in by_line.items()
    }  # same keys, their lines reversed: the line number is lineage, not identity
    # Any field of the event's identity changes the key.
    other_user = rees_events(tmp_path, "b.csv", [REES_LINES[0].replace("541312140", "541312141")])
    assert other_user["event_id"].iloc[0] != first["event_id"].iloc[0]


def test_two_versions_of_one_clickstream_event_are_quarantined_and_the_day_goes_on(tmp_path):
    repriced = REES_LINES[3].replace(",251.74,", ",199.00,")  # the same purchase at another price
    lines = [*REES_LINES, REES_LINES[1], repriced]  # and one exact repeat of a view
    tables, _ = rees46.land_tables(write(tmp_path, "c.csv", REES_HEADER, lines), REES_DAY)
    result = validate_day(REES_DAY, tables, None)
    assert not result.blocking, [b.describe() for b in result.blocking]
    events = result.tables["events"]
    assert events.rows_in == len(lines) == len(events.validated) + len(events.quarantine)
    assert events.by_rule["duplicate_line"] == 1 and events.by_rule["conflicting_duplicate"] == 2
    quarantined = dict(zip(events.quarantine["_source_line"].astype(int), events.quarantine["rule"], strict=True))
    assert quarantined[6] == "duplicate_line"  # the repeat of line 3; line 3 itself is kept
    assert quarantined[5] == quarantined[7] == "conflicting_duplicate"  # neither price is trusted
    assert events.validated["event_id"].is_unique
    assert result.tables["orders"].by_rule["conflicting_duplicate"] == 2  # the purchase's order lines too


def test_an_invoice_line_keeps_its_key_when_the_file_is_reordered(tmp_path):
    def ids(name: str, lines: list[str]) -> dict[str, str]:
        tables, _ = online_retail.land_tables(write(tmp_path, name, RETAIL_HEADER, lines), RETAIL_DAY)
        events = tables["events"]
        return dict(zip(events["product_id"], events["event_id"], strict=True))

    keys = ids("a.csv", RETAIL_LINES)
    assert keys == ids("b.csv", [RETAIL_LINES[2], RETAIL_LINES[1], RETAIL_LINES[0]])
    assert all(key.startswith(("536365-", "536366-")) for key in keys.values())


def test_identical_lines_of_one_invoice_are_two_purchases_and_a_file_landed_twice_is_not(tmp_path):
    rung_again = [*RETAIL_LINES, RETAIL_LINES[0]]  # one product rung up twice on one invoice
    tables, _ = online_retail.land_tables(write(tmp_path, "again.csv", RETAIL_HEADER, rung_again), RETAIL_DAY)
    events = tables["events"]["event_id"].tolist()
    assert len(set(events)) == 4 and events[3] == events[0] + "-2"
    result = validate_day(RETAIL_DAY, tables, None)
    assert not result.blocking and len(result.tables["events"].validated) == 4

    twice = RETAIL_LINES + RETAIL_LINES  # the day's file appended to itself
    tables, _ = online_retail.land_tables(write(tmp_path, "twice.csv", RETAIL_HEADER, twice), RETAIL_DAY)
    result = validate_day(RETAIL_DAY, tables, None)
    assert not result.blocking, [b.describe() for b in result.blocking]
    for table in ("events", "orders"):
        outcome = result.tables[table]
        assert outcome.by_rule == {"duplicate_line": 3} and len(outcome.validated) == 3


MAPPING = ORDERS_MAPPING
ORDERS_HEADER = "OrderRef,Line,CreatedAt,Buyer,Sku,Qty,Price,Cancelled"
ORDERS = [
    "A-1,1,2024-02-03T09:00:00Z,u1,sku-1,1,9.99,no",
    "A-1,2,2024-02-03T09:00:00Z,u1,sku-2,2,5.00,no",
]


def test_a_drop_keeps_its_own_keys_an_exact_repeat_is_quarantined_and_a_reused_key_blocks(tmp_path):
    day = dt.date(2024, 2, 3)
    (tmp_path / "mapping.yaml").write_text(MAPPING)

    write(tmp_path, "orders.csv", ORDERS_HEADER, [*ORDERS, ORDERS[1]])
    tables, _ = mapped.land_tables(tmp_path / "mapping.yaml", day)
    result = validate_day(day, tables, None)
    assert not result.blocking and result.tables["orders"].by_rule == {"duplicate_line": 1}

    # The drop's own key (order and line) on two lines that differ: the key is the source's, so the
    # day is blocked naming the rule, not silently halved.
    write(tmp_path, "orders.csv", ORDERS_HEADER, [*ORDERS, ORDERS[1].replace("sku-2", "sku-3")])
    tables, _ = mapped.land_tables(tmp_path / "mapping.yaml", day)
    result = validate_day(day, tables, None)
    assert [(b.table, b.rule, b.count) for b in result.blocking if b.table == "orders"] == [
        ("orders", "duplicate_keys", 2)
    ]


def test_a_mistyped_year_lands_on_the_files_nearer_end_to_be_quarantined_not_on_a_day_of_its_own(tmp_path):
    # 200 lines over two days, one dated ten years early and one a year late (typos, not trading days),
    # one unreadable.
    lines = [RETAIL_LINES[i % 3].replace("536365", f"5{i:05d}").replace("536366", f"6{i:05d}") for i in range(200)]
    lines += [line.replace("2010-12-01", "2010-12-02") for line in lines[:100]]
    early = RETAIL_LINES[1].replace("536365", "700001").replace("2010-12-01", "2000-12-01")
    late = RETAIL_LINES[1].replace("536365", "700002").replace("2010-12-01", "2011-12-01")
    unreadable = RETAIL_LINES[1].replace("536365", "700003").replace("2010-12-01 08:26:00", "soon")
    path = write(tmp_path, "typos.csv", RETAIL_HEADER, [*lines, early, late, unreadable])
    invoices = online_retail.read_invoices(path)
    landed_on = dict(zip(invoices["InvoiceNo"], invoices["_day"], strict=True))
    assert landed_on["700001"] == RETAIL_DAY and landed_on["700003"] == RETAIL_DAY
    assert landed_on["700002"] == dt.date(2010, 12, 2)
    assert set(invoices["_day"]) == {RETAIL_DAY, dt.date(2010, 12, 2)}

    for day, typo in ((RETAIL_DAY, "700001"), (dt.date(2010, 12, 2), "700002")):
        tables, facts = online_retail.land_tables(path, day)
        result = validate_day(day, tables, None)
        orders = result.tables["orders"]
        assert orders.rows_in == len(orders.validated) + len(orders.quarantine) == facts["lines_landed"]
        rules = dict(zip(orders.quarantine["order_id"], orders.quarantine["rule"], strict=True))
        assert rules[typo] == "outside_logical_day"
    # A day in the years between is outside the file, not a closed day of it.
    _, facts = online_retail.land_tables(path, dt.date(2005, 6, 1))
    assert facts["lines_landed"] == 0 and facts["closed_day"] is False


def test_a_file_of_two_long_periods_keeps_both():
    from include.preference.sources.files import outlying_days

    days = [dt.date(2010, 1, 1) + dt.timedelta(days=i) for i in range(30)]
    days += [dt.date(2011, 6, 1) + dt.timedelta(days=i) for i in range(10)]  # a quarter of the lines
    import pandas as pd

    assert not outlying_days(pd.Series(days)).any()
    assert outlying_days(pd.Series([*days * 10, dt.date(1911, 1, 1)])).tolist()[-1]
