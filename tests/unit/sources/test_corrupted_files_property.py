"""A property over generated corrupted files: whatever the file, landing and validation either
refuse it with the project's own error or account for every line.

Examples are drawn from a fixed seed (``derandomize``): every run tries the same files.

Each example starts from clean Online Retail lines and breaks them at random (values replaced by
markup, quotes, control and NUL bytes, huge or epoch numbers, numeric dates, long text; lines
repeated, dropped, truncated; another delimiter or encoding; a header repeated or cut). Then:

* landing every day of the file raises nothing but a ``PreferenceError`` (a refusal with a message);
* when it lands, every line of the file lands on exactly one day;
* validating a landed day raises nothing but a ``PreferenceError``, and every table's rows in
  equal its validated plus quarantined rows.
"""

from __future__ import annotations

import datetime as dt
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from include.preference.errors import PreferenceError
from include.preference.sources.files import DAY
from include.preference.sources.online_retail import COLUMNS, land_tables, read_invoices
from include.preference.validation import validate_day

pytestmark = [pytest.mark.unit, pytest.mark.slow]

HEADER = ",".join(COLUMNS)
CLEAN = [
    "536365,85123A,WHITE HANGING HEART T-LIGHT HOLDER,6,2010-12-01 08:26:00,2.55,17850.0,United Kingdom",
    "536365,71053,WHITE METAL LANTERN,6,2010-12-01 08:26:00,3.39,17850.0,United Kingdom",
    "C536379,D,Discount,-1,2010-12-01 09:41:00,27.5,14527.0,United Kingdom",
    "536366,22633,HAND WARMER UNION JACK,6,2010-12-02 08:28:00,1.85,17850.0,United Kingdom",
    "536367,84879,ASSORTED COLOUR BIRD ORNAMENT,32,2010-12-02 08:34:00,1.69,13047.0,United Kingdom",
    "536368,22960,JAM MAKING SET WITH JARS,6,2010-12-03 08:34:00,4.25,,United Kingdom",
]
BAD_VALUES = st.sampled_from(
    [
        "",
        " ",
        "NULL",
        "None",
        "<b>x</b>",
        "O'Brien",
        '"quoted"',
        "a\x00b",
        "\x07bell",
        "\ufffd",
        "1" * 13,
        "1e12",
        "-1e12",
        "nan",
        "inf",
        "1291191960",
        "03/04/2011 10:00",
        "25/12/2010 10:00",
        "12/25/2010 10:00",
        "2099-01-01 00:00:00",
        "1900-01-01 00:00:00",
        "x" * 20_000,
        "  17850.0  ",
        "\u202eevil",
        "😀",
    ]
)


@st.composite
def corrupted_files(draw: st.DrawFn) -> bytes:
    rows = [line.split(",") for line in CLEAN]
    for _ in range(draw(st.integers(0, 6))):
        row = draw(st.integers(0, len(rows) - 1))
        column = draw(st.integers(0, len(COLUMNS) - 1))
        rows[row][column] = draw(BAD_VALUES | st.text(max_size=30))
    lines = [",".join(f'"{v}"' if "," in v or '"' in v or "\n" in v else v for v in row) for row in rows]
    for _ in range(draw(st.integers(0, 3))):
        kind = draw(st.sampled_from(["repeat", "drop", "cut", "extra_field", "short"]))
        index = draw(st.integers(0, len(lines) - 1)) if lines else 0
        if not lines:
            break
        if kind == "repeat":
            lines.append(lines[index])
        elif kind == "drop":
            lines.pop(index)
        elif kind == "cut":
            lines[index] = lines[index][: draw(st.integers(0, len(lines[index])))]
        elif kind == "extra_field":
            lines[index] += ",extra"
        else:
            lines[index] = ",".join(lines[index].split(",")[:3])
    header = HEADER
    shape = draw(st.sampled_from(["plain", "plain", "plain", "semicolon", "header_only", "no_header", "twice"]))
    if shape == "semicolon":
        header, lines = header.replace(",", ";"), [line.replace(",", ";") for line in lines]
    elif shape == "header_only":
        lines = []
    elif shape == "no_header":
        header = lines.pop(0) if lines else ""
    elif shape == "twice":
        lines = lines + lines
    text = "\n".join([header, *lines]) + draw(st.sampled_from(["\n", "", "\r\n"]))
    encoding = draw(st.sampled_from(["utf-8", "utf-8", "utf-8", "utf-8-sig", "utf-16", "latin-1"]))
    try:
        return text.encode(encoding)
    except UnicodeEncodeError:
        return text.encode("utf-8")


def land_every_day(data: bytes) -> tuple[dict[dt.date, tuple[dict, dict]], int] | None:
    """``data`` as a file, every day of it landed (tables and facts per day) with the file's line
    count; None when the file is refused."""
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "retail.csv"
        path.write_bytes(data)
        try:
            lines = read_invoices(path)
            days = sorted(set(lines[DAY].dropna()))
            landed = {day: land_tables(path, day) for day in days}
        except PreferenceError:
            return None
    return landed, len(lines)


@settings(max_examples=150, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])
@given(corrupted_files())
def test_landing_refuses_with_a_message_or_lands_every_line_once(data):
    result = land_every_day(data)
    if result is None:
        return
    landed, file_lines = result
    assert sum(facts["lines_landed"] for _, facts in landed.values()) == file_lines


@settings(max_examples=15, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])
@given(corrupted_files())
def test_validation_refuses_with_a_message_or_accounts_for_every_row(data):
    result = land_every_day(data)
    if result is None:
        return
    landed, _ = result
    day = min(landed)
    tables, _ = landed[day]
    try:
        validation = validate_day(day, tables, None)
    except PreferenceError:
        return
    for name, outcome in validation.tables.items():
        if outcome.blocking and not len(outcome.validated) + len(outcome.quarantine):
            continue  # a structural refusal of the table: nothing published, reported by rule
        assert outcome.rows_in == len(outcome.validated) + len(outcome.quarantine), name
