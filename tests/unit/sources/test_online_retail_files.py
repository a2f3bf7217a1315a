"""File-level corruption through the Online Retail importer: each lands every line, or fails clearly."""

from __future__ import annotations

import datetime as dt
import gzip
from pathlib import Path

import pytest

from include.preference.errors import SourceFormatError
from include.preference.sources.online_retail import land_tables, read_invoices

pytestmark = pytest.mark.unit

HEADER = "InvoiceNo,StockCode,Description,Quantity,InvoiceDate,UnitPrice,CustomerID,Country"
LINES = [
    "536365,85123A,WHITE HANGING HEART T-LIGHT HOLDER,6,2010-12-01 08:26:00,2.55,17850.0,United Kingdom",
    "536365,71053,WHITE METAL LANTERN,6,2010-12-01 08:26:00,3.39,17850.0,United Kingdom",
    "C536379,D,Discount,-1,2010-12-01 09:41:00,27.5,14527.0,United Kingdom",
    "536366,22633,HAND WARMER UNION JACK,6,2010-12-02 08:28:00,1.85,17850.0,United Kingdom",
]
DAY = dt.date(2010, 12, 1)


def write(tmp_path: Path, text: str, name: str = "retail.csv", raw: bytes | None = None) -> Path:
    path = tmp_path / name
    path.write_bytes(raw if raw is not None else text.encode())
    return path


def clean_orders(tmp_path: Path):
    return land_tables(write(tmp_path, "\n".join([HEADER, *LINES]) + "\n", "clean.csv"), DAY)[0]["orders"]


def test_byte_order_mark_is_ignored(tmp_path):
    path = write(tmp_path, "", raw=b"\xef\xbb\xbf" + ("\n".join([HEADER, *LINES]) + "\n").encode())
    orders = land_tables(path, DAY)[0]["orders"]
    assert orders.drop(columns="_source_line").equals(clean_orders(tmp_path).drop(columns="_source_line"))


def test_crlf_line_endings_read_like_lf(tmp_path):
    path = write(tmp_path, "\r\n".join([HEADER, *LINES]) + "\r\n")
    orders = land_tables(path, DAY)[0]["orders"]
    assert orders.drop(columns="_source_line").equals(clean_orders(tmp_path).drop(columns="_source_line"))


def test_quoted_newline_in_a_description_stays_one_line(tmp_path):
    quoted = '536365,21730,"GLASS STAR FROSTED\nT-LIGHT HOLDER",6,2010-12-01 08:26:00,4.25,17850.0,United Kingdom'
    path = write(tmp_path, "\n".join([HEADER, LINES[0], quoted]) + "\n")
    tables, _ = land_tables(path, DAY)
    assert len(tables["orders"]) == 2
    assert "FROSTED\nT-LIGHT" in tables["products"].set_index("product_id").loc["21730", "title"]


def test_gzip_file_reads_like_plain(tmp_path):
    path = write(tmp_path, "", name="retail.csv.gz", raw=gzip.compress(("\n".join([HEADER, *LINES]) + "\n").encode()))
    assert len(land_tables(path, DAY)[0]["orders"]) == 3


def test_undecodable_bytes_are_kept_as_replacement_characters(tmp_path):
    body = ("\n".join([HEADER, *LINES]) + "\n").encode().replace(b"WHITE METAL", b"WHITE \xff\xfeMETAL")
    orders_day = land_tables(write(tmp_path, "", raw=body), DAY)[0]
    titles = orders_day["products"].set_index("product_id")["title"]
    assert "\ufffd" in titles.loc["71053"]  # validation files it under bad_encoding
    assert len(orders_day["orders"]) == 3


def test_a_file_that_is_not_csv_at_all_fails_naming_the_problem(tmp_path):
    path = write(tmp_path, "", name="retail.csv", raw=b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" + bytes(range(256)))
    with pytest.raises(SourceFormatError, match="missing_columns|not a readable"):
        read_invoices(path)


def test_a_file_without_a_required_column_fails_naming_it(tmp_path):
    header = HEADER.replace("InvoiceDate", "Date")
    with pytest.raises(SourceFormatError, match=r"missing_columns \(1\): InvoiceDate"):
        read_invoices(write(tmp_path, "\n".join([header, *LINES]) + "\n"))


def test_unreadable_dates_land_on_the_first_day_and_nothing_is_lost(tmp_path):
    broken = LINES[1].replace("2010-12-01 08:26:00", "someday")
    path = write(tmp_path, "\n".join([HEADER, LINES[0], broken, *LINES[2:]]) + "\n")
    invoices = read_invoices(path)
    assert invoices["_day"].notna().all() and len(invoices) == 4
    first_day = land_tables(path, DAY)[0]["orders"]
    assert "someday" in set(first_day["order_time"])  # validation: unparseable_timestamp
    assert len(first_day) + len(land_tables(path, dt.date(2010, 12, 2))[0]["orders"]) == 4


def test_a_time_validation_can_read_lands_on_its_own_day_whatever_its_layout(tmp_path, monkeypatch):
    # 12/02/2010 alone cannot say which comes first: the setting does (and the file is refused without).
    slashed = LINES[3].replace("2010-12-02 08:28:00", "12/02/2010 08:28")
    path = write(tmp_path, "\n".join([HEADER, *LINES[:3], slashed]) + "\n")
    with pytest.raises(SourceFormatError, match="ambiguous_dates: .* set PREFERENCE_DATE_ORDER"):
        read_invoices(path)
    monkeypatch.setenv("PREFERENCE_DATE_ORDER", "month_first")
    invoices = read_invoices(path)
    assert invoices["_day"].iloc[3] == dt.date(2010, 12, 2)  # not the file's first day
    assert invoices["InvoiceDate"].iloc[3] == "2010-12-02T08:28:00+00:00"  # landed as validation reads it
    monkeypatch.setenv("PREFERENCE_DATE_ORDER", "day_first")
    assert read_invoices(path)["_day"].iloc[3] == dt.date(2010, 2, 12)


@pytest.mark.parametrize("order", ["day_first", "month_first"])
def test_the_file_decides_its_date_order_from_any_date_that_can_only_be_read_one_way(tmp_path, order):
    # 03/04 is ambiguous; 25/12 (day first) or 12/25 (month first) elsewhere in the file decides.
    def numeric(day: int, month: int) -> str:
        return f"{day:02d}/{month:02d}/2010 10:00" if order == "day_first" else f"{month:02d}/{day:02d}/2010 10:00"

    rows = [
        LINES[0].replace("2010-12-01 08:26:00", numeric(3, 4)),
        LINES[1].replace("2010-12-01 08:26:00", numeric(25, 12)),
    ]
    invoices = read_invoices(write(tmp_path, lines_with(rows=rows), name=f"{order}.csv"))
    assert invoices["_day"].tolist() == [dt.date(2010, 4, 3), dt.date(2010, 12, 25)]
    orders = land_tables(write(tmp_path, lines_with(rows=rows), name=f"{order}-2.csv"), dt.date(2010, 4, 3))[0]
    assert orders["orders"]["order_time"].tolist() == ["2010-04-03T10:00:00+00:00"]


def test_both_date_orders_in_one_file_or_a_contradicting_setting_are_refused(tmp_path, monkeypatch):
    rows = [
        LINES[0].replace("2010-12-01 08:26:00", "25/12/2010 10:00"),
        LINES[1].replace("2010-12-01 08:26:00", "12/25/2010 10:00"),
    ]
    with pytest.raises(SourceFormatError, match="mixed_date_order"):
        read_invoices(write(tmp_path, lines_with(rows=rows), name="mixed.csv"))
    monkeypatch.setenv("PREFERENCE_DATE_ORDER", "month_first")
    with pytest.raises(SourceFormatError, match="dates day first, but the date order given .* says month_first"):
        read_invoices(write(tmp_path, lines_with(rows=rows[:1]), name="contradicts.csv"))


def lines_with(header: str = HEADER, rows: list[str] = LINES) -> str:
    return "\n".join([header, *rows]) + "\n"


@pytest.mark.parametrize(
    "raw, message",
    [
        (b"", "is empty"),
        (b"\n\n", "is empty"),
        ((HEADER + "\n").encode(), "holds a header and no lines"),
        (lines_with().encode("utf-16"), r"encoded as UTF-16 \(little-endian\)"),
        (lines_with().encode("utf-16-be"), "mostly NUL bytes"),
        (lines_with().replace(",", ";").encode(), r"semicolon-delimited \(';'\)"),
        (lines_with().replace(",", "\t").encode(), r"tab-delimited"),
        (lines_with(HEADER + ",Country").encode(), "duplicate_header: column.s. Country appear"),
        (
            lines_with(rows=[line.replace("2010-12-01 08:26:00", "1291191960") for line in LINES[:2]]).encode(),
            "epoch_timestamps: column InvoiceDate holds numbers such as '1291191960'",
        ),
        (
            lines_with(rows=[line.replace("2010-12-01 08:26:00", "someday") for line in LINES[:2]]).encode(),
            "unreadable_times: none of its 2 lines",
        ),
    ],
)
def test_files_that_would_be_misread_are_refused_naming_the_file_and_what_was_expected(tmp_path, raw, message):
    path = write(tmp_path, "", name=f"odd-{abs(hash(raw)) % 10**8}.csv", raw=raw)
    with pytest.raises(SourceFormatError, match=message) as raised:
        land_tables(path, DAY)
    assert str(path) in str(raised.value)


def test_a_nul_byte_inside_an_id_never_cuts_the_field(tmp_path):
    rows = [LINES[0].replace("17850.0", "178\x0050.0"), *LINES[1:]]
    orders = land_tables(write(tmp_path, lines_with(rows=rows)), DAY)[0]["orders"]
    # The line lands whole, its id marked as undecodable (validation quarantines bad_encoding).
    assert len(orders) == 3 and orders["customer_id"].iloc[0] == "178\ufffd50.0"
    assert orders["product_id"].tolist() == clean_orders(tmp_path)["product_id"].tolist()


def test_some_epoch_times_among_dates_land_to_be_quarantined_not_refused(tmp_path):
    rows = [LINES[0].replace("2010-12-01 08:26:00", "1291191960"), *LINES[1:]]
    lines = read_invoices(write(tmp_path, lines_with(rows=rows)))
    assert len(lines) == len(LINES) and lines["_day"].iloc[0] == DAY  # the file's first day


def test_a_line_an_invoice_repeats_is_kept_but_a_day_or_file_landed_twice_is_marked(tmp_path):
    from include.preference.sources.files import DUPLICATE_OF
    from include.preference.validation import validate_day

    # One product rung twice on one invoice, lines apart: a real purchase each time (kept).
    again = lines_with(rows=[*LINES, LINES[0]])
    invoices = read_invoices(write(tmp_path, again, name="again.csv"))
    assert invoices[DUPLICATE_OF].isna().all()
    # The first day's lines appended once more: every line of that day twice, the copies marked.
    appended = lines_with(rows=[*LINES, *LINES[:3]])
    invoices = read_invoices(write(tmp_path, appended, name="appended.csv"))
    assert invoices[DUPLICATE_OF].tolist()[-3:] == [2, 3, 4] and invoices[DUPLICATE_OF].iloc[:4].isna().all()
    # The whole file twice: every repeat marked, and validation quarantines exactly those.
    twice = write(tmp_path, lines_with(rows=LINES + LINES), name="twice.csv")
    tables, facts = land_tables(twice, DAY)
    assert facts["lines_landed"] == 6
    result = validate_day(DAY, tables, None)
    orders = result.tables["orders"]
    assert orders.by_rule["duplicate_line"] == 3 and orders.rows_in == 6
    copies = orders.quarantine[orders.quarantine["rule"] == "duplicate_line"]
    assert sorted(copies["_source_line"].astype(int)) == [6, 7, 8]


def test_a_time_in_the_future_lands_on_the_files_last_day_to_be_quarantined(tmp_path):
    rows = [*LINES[:3], LINES[3].replace("2010-12-02 08:28:00", "2099-12-02 08:28:00")]
    invoices = read_invoices(write(tmp_path, lines_with(rows=rows), name="future.csv"))
    assert invoices["_day"].tolist() == [DAY] * 4  # the file's last real day is its first here
    rows = [*LINES, LINES[0].replace("2010-12-01 08:26:00", "2099-01-01 00:00:00")]
    tables, _ = land_tables(write(tmp_path, lines_with(rows=rows), name="future2.csv"), dt.date(2010, 12, 2))
    from include.preference.validation import validate_day

    result = validate_day(dt.date(2010, 12, 2), tables, None)
    assert result.tables["orders"].by_rule.get("future_timestamp") == 1
    assert result.tables["orders"].rows_in == 2


def test_a_line_wider_than_the_header_is_quarantined_whole_and_never_shifts_the_others(tmp_path):
    from include.preference.sources.files import MALFORMED
    from include.preference.validation import validate_day

    # An unquoted comma inside a description: ten fields under an eight-field header.
    wide = LINES[1].replace("WHITE METAL LANTERN", "WHITE, METAL, LANTERN")
    tables, facts = land_tables(write(tmp_path, lines_with(rows=[LINES[0], wide, *LINES[2:]]), name="wide.csv"), DAY)
    orders = tables["orders"]
    assert facts["lines_landed"] == 3 and len(orders) == 3
    assert orders[MALFORMED].notna().tolist() == [False, True, False]
    assert "10 fields, the header 8" in orders[MALFORMED].iloc[1] and "United Kingdom" in orders[MALFORMED].iloc[1]
    clean = clean_orders(tmp_path)
    assert orders.iloc[[0, 2]]["product_id"].tolist() == clean.iloc[[0, 2]]["product_id"].tolist()
    # No snapshot takes a shifted field for a product or a customer.
    assert set(tables["products"]["product_id"]) == {"85123A", "D"}
    result = validate_day(DAY, tables, None)
    checked = result.tables["orders"]
    counted = {rule: n for rule, n in checked.by_rule.items() if n}
    assert checked.rows_in == 3 and counted == {"malformed_line": 1, "cancellation": 1}, counted
    quarantined = checked.quarantine[checked.quarantine["rule"] == "malformed_line"]
    assert quarantined["_source_line"].astype(int).tolist() == [3]


def test_every_line_wider_than_the_header_is_never_read_with_a_column_taken_for_the_index(tmp_path):
    # Each line with one field more than the header: pandas alone would take the first as the row
    # index and shift every value one column left, silently.
    rows = [line + ",extra" for line in LINES] * 4
    with pytest.raises(SourceFormatError, match=r"malformed_file: 16 of 16 lines have more fields than the header's 8"):
        read_invoices(write(tmp_path, lines_with(rows=rows), name="shifted.csv"))


def test_a_line_shorter_than_the_header_gets_empty_fields_and_is_quarantined_for_what_it_lacks(tmp_path):
    from include.preference.validation import validate_day

    tables, _ = land_tables(write(tmp_path, lines_with(rows=[LINES[0], "536365,71053,WHITE"]), name="short.csv"), DAY)
    assert tables["orders"]["quantity"].tolist() == ["6", ""]
    checked = validate_day(DAY, tables, None).tables["orders"]
    assert checked.rows_in == 2 and {rule: n for rule, n in checked.by_rule.items() if n} == {"missing_required": 1}


def test_a_run_s_date_order_reads_a_file_that_cannot_tell_and_must_agree_with_one_that_can(tmp_path, monkeypatch):
    from include.preference.sources.files import dates_read_as

    monkeypatch.delenv("PREFERENCE_DATE_ORDER", raising=False)
    rows = [line.replace("2010-12-01", "03/04/2011") for line in LINES[:2]]
    ambiguous = write(tmp_path, lines_with(rows=rows), name="ambiguous.csv")
    with pytest.raises(SourceFormatError, match="ambiguous_dates.*date_order"):
        read_invoices(ambiguous)
    with dates_read_as("day_first"):
        assert set(read_invoices(ambiguous)["_day"]) == {dt.date(2011, 4, 3)}
    with dates_read_as("month_first"):
        assert set(read_invoices(ambiguous)["_day"]) == {dt.date(2011, 3, 4)}
    telling = write(tmp_path, lines_with(rows=[line.replace("2010-12-01", "25/04/2011") for line in LINES[:2]]))
    with dates_read_as("month_first"), pytest.raises(SourceFormatError, match="day first, but the date order given"):
        read_invoices(telling)
    with pytest.raises(SourceFormatError, match="date_order must be day_first or month_first"), dates_read_as("ydm"):
        pass
