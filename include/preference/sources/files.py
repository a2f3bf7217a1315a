"""What every file importer shares: read a CSV as text, fail clearly, assign each line one day."""

from __future__ import annotations

import csv
import datetime as dt
import gzip
import hashlib
import io
import os
import re
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from functools import lru_cache
from pathlib import Path

import pandas as pd

from include.preference.errors import SourceFormatError
from include.preference.validation.casting import DUPLICATE_OF, MALFORMED, future_horizon, parse_timestamps

SOURCE_LINE = "_source_line"
DAY = "_day"
# Which exact repeats are duplicates, per source (README, validation section):
# "all": every repeat of an earlier line; "repeated_days": only in a day whose every distinct line
# appears the same number of times, two or more (the day, or the file, landed twice over), for
# sources whose lines legitimately repeat.
DUPLICATE_POLICIES = ("all", "repeated_days")


def read_text_csv(
    path: Path, columns: tuple[str, ...], time_column: str | None, duplicates: str = "all"
) -> pd.DataFrame:
    """The whole file as text, with ``_source_line`` and (given a time column) each line's ``_day``.

    BOMs, CRLF, gzip and quoted newlines are handled; undecodable bytes and NUL bytes become
    U+FFFD (validation quarantines the line as bad_encoding; a NUL never cuts a field short).
    Lines whose time cannot be read get the file's first day, so every line lands exactly once.
    Exact repeats of a line are marked in ``_duplicate_of`` as ``duplicates`` says (see
    :func:`duplicate_lines`). Cached per file version.

    Raises:
        SourceFormatError: refused with the whole file, naming the file and what was expected: an
            empty or header-only file, a UTF-16/32 file, another delimiter than the comma, two
            columns of one name, a required column missing, a time column of epoch numbers.
    """
    stat = path.stat()
    order = configured_date_order()
    return _read_cached(str(path), stat.st_mtime_ns, stat.st_size, columns, time_column, order, duplicates).copy()


# Byte order marks of encodings pandas would misread as UTF-8 (UTF-32 first: its LE mark starts like UTF-16's).
FOREIGN_BOMS = (
    (b"\xff\xfe\x00\x00", "UTF-32 (little-endian)"),
    (b"\x00\x00\xfe\xff", "UTF-32 (big-endian)"),
    (b"\xff\xfe", "UTF-16 (little-endian)"),
    (b"\xfe\xff", "UTF-16 (big-endian)"),
)
OTHER_DELIMITERS = {";": "semicolon", "\t": "tab", "|": "pipe"}
EPOCH_NUMBER = re.compile(r"^\d{9,13}(\.\d+)?$")


def _file_bytes(path: str) -> bytes:
    """The file's bytes, gunzipped when it is gzip (by content, whatever its name)."""
    try:
        with open(path, "rb") as handle:
            data = handle.read()
        return gzip.decompress(data) if data[:2] == b"\x1f\x8b" else data
    except (OSError, EOFError, gzip.BadGzipFile) as error:
        raise SourceFormatError(f"{path} is not a readable CSV file: {error}") from error


HEAD_BYTES = 65_536  # the part of a file its layout is judged on (header, encoding)


def _check_layout(path: str, data: bytes, columns: tuple[str, ...]) -> None:
    """Refuse what would otherwise be misread, judged on the file's head (no copy of the whole)."""
    for bom, encoding in FOREIGN_BOMS:
        if data.startswith(bom):
            raise SourceFormatError(f"{path} is encoded as {encoding}; expected UTF-8 (save the file as UTF-8)")
    sample = data[:4096]
    if sample.count(b"\x00") > len(sample) // 4:
        raise SourceFormatError(f"{path} is mostly NUL bytes (UTF-16/32 without a byte order mark?); expected UTF-8")
    text = data[:HEAD_BYTES].decode("utf-8-sig", errors="replace")
    if not text.strip() and not data.decode("utf-8-sig", errors="replace").strip():
        raise SourceFormatError(f"{path} is empty: expected a header line and at least one line of data")
    header_line = text.splitlines()[0] if text.strip() else ""
    header = [field.strip() for field in next(csv.reader([header_line]))]
    missing = [c for c in columns if c not in header]
    if missing:
        for delimiter, name in OTHER_DELIMITERS.items():
            split = [field.strip().strip('"') for field in header_line.split(delimiter)]
            if len(split) > 1 and not [c for c in columns if c not in split]:
                raise SourceFormatError(
                    f"{path} is {name}-delimited ({delimiter!r}); expected commas between fields "
                    f"(columns {', '.join(columns)})"
                )
    repeated = sorted({name for name in header if header.count(name) > 1})
    if repeated:
        raise SourceFormatError(
            f"{path}: duplicate_header: column(s) {', '.join(repeated)} appear more than once in the header; "
            "expected each column once"
        )


# More lines than this with more fields than the header is a file that was not written as CSV
# (unquoted commas in a text column): refused. Up to it, each such line is quarantined (malformed_line).
MALFORMED_LIMIT = 10
MALFORMED_SHARE = 0.01
FIELD_COUNT = re.compile(r"Expected \d+ fields in line \d+, saw \d+")


def _parse(path: str, data: bytes) -> pd.DataFrame:
    """The file's lines as text columns named by its header (stripped).

    The header's width rules: a line with more fields than the header is never shifted or cut
    silently (pandas would take a first column without a header name as the index). Such lines keep
    the header's fields and carry ``_malformed`` (what was seen, the fields beyond the header), which
    validation quarantines as malformed_line; too many of them refuse the file. Short lines get empty
    fields, as the parser gives them."""
    try:
        # header=None: the first line's width is the file's, so any longer line is a ParserError.
        table = pd.read_csv(
            io.BytesIO(data),
            header=None,
            dtype=str,
            keep_default_na=False,
            encoding="utf-8-sig",
            encoding_errors="replace",
        )
    except pd.errors.ParserError as error:
        if not FIELD_COUNT.search(str(error)):
            raise SourceFormatError(f"{path} is not a readable CSV file: {error}") from error
        return _parse_with_malformed_lines(path, data)
    except (UnicodeDecodeError, EOFError, OSError, ValueError) as error:
        raise SourceFormatError(f"{path} is not a readable CSV file: {error}") from error
    frame = table.iloc[1:].reset_index(drop=True)
    frame.columns = [str(c).strip() for c in table.iloc[0]]
    return frame


def _parse_with_malformed_lines(path: str, data: bytes) -> pd.DataFrame:
    """:func:`_parse` for a file with lines wider than its header (Python's csv reader, line by line)."""
    text = data.decode("utf-8-sig", errors="replace")
    rows = [row for row in csv.reader(io.StringIO(text, newline="")) if row]  # blank lines skipped, as pandas does
    header, lines = rows[0], rows[1:]
    width = len(header)
    fields = [row[:width] + [""] * (width - len(row)) for row in lines]
    marks: list[str | None] = [
        f"{len(row)} fields, the header {width}; beyond it: {row[width:]!r}"[:1_000] if len(row) > width else None
        for row in lines
    ]
    wide = [i for i, mark in enumerate(marks) if mark is not None]
    if len(wide) > max(MALFORMED_LIMIT, MALFORMED_SHARE * len(lines)):
        raise SourceFormatError(
            f"{path}: malformed_file: {len(wide)} of {len(lines)} lines have more fields than the header's {width} "
            f"(first: line {wide[0] + 2}, {len(lines[wide[0]])} fields); expected {width} comma-separated fields "
            "per line, texts with commas in double quotes"
        )
    frame = pd.DataFrame(fields, columns=[name.strip() for name in header], dtype=object)
    frame[MALFORMED] = pd.Series(marks, dtype="string")
    return frame


@lru_cache(maxsize=4)
def _read_cached(
    path: str,
    mtime_ns: int,
    size: int,
    columns: tuple[str, ...],
    time_column: str | None,
    order: str | None,
    duplicates: str,
) -> pd.DataFrame:
    data = _file_bytes(path)
    _check_layout(path, data, columns)
    # A NUL inside a field would end it early in the parser: make it a replacement character, which
    # validation quarantines (bad_encoding) like any other undecodable byte.
    if b"\x00" in data:
        data = data.replace(b"\x00", "\ufffd".encode())
    frame = _parse(path, data)
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise SourceFormatError(
            f"{path}: missing_columns ({len(missing)}): {', '.join(missing)}; "
            f"found {', '.join(map(str, frame.columns))}"
        )
    if frame.empty:
        raise SourceFormatError(f"{path} holds a header and no lines: expected at least one line of data")
    frame[SOURCE_LINE] = range(2, len(frame) + 2)  # line numbers as in the file (header is line 1)
    if MALFORMED not in frame:
        frame[MALFORMED] = pd.Series(pd.NA, index=frame.index, dtype="string")
    if time_column is not None:
        times = frame[time_column].str.strip()
        if times.str.fullmatch(EPOCH_NUMBER).all():
            raise SourceFormatError(
                f"{path}: epoch_timestamps: column {time_column} holds numbers such as {times.iloc[0]!r} "
                "(seconds or milliseconds since 1970?); expected dates and times such as 2011-12-09 12:50:00"
            )
        assign_days(frame, time_column, path, order)
        if frame[DAY].isna().all():
            raise SourceFormatError(
                f"{path}: unreadable_times: none of its {len(frame)} lines has a readable, past time in column "
                f"{time_column} (line 2: {times.iloc[0]!r}); expected dates and times such as 2011-12-09 12:50:00"
            )
    content = [c for c in frame.columns if c not in (SOURCE_LINE, DAY)]
    frame[DUPLICATE_OF] = duplicate_lines(frame, content, duplicates)
    return frame


def line_digests(frame: pd.DataFrame, columns: list[str]) -> pd.Series:
    """Each line's identity from its content: 16 hex digits of BLAKE2b over ``columns`` as the file
    wrote them (stripped, joined by the unit separator). The same fields give the same digest in any
    file, at any line, on any machine; the line number stays beside it for lineage."""
    if frame.empty:
        return pd.Series([], index=frame.index, dtype=object)
    fields = [frame[column].astype("string").fillna("").str.strip() for column in columns]
    joined = fields[0].str.cat(fields[1:], sep="\x1f") if len(fields) > 1 else fields[0]
    digests = [hashlib.blake2b(text.encode("utf-8", "surrogatepass"), digest_size=8).hexdigest() for text in joined]
    return pd.Series(digests, index=frame.index, dtype=object)


def conflicting_lines(frame: pd.DataFrame, identity: list[str], content: list[str]) -> pd.Series:
    """``"true"`` on every line whose identity (``identity`` columns) another line shares with other
    content (some of ``content`` differs), null elsewhere. Exact repeats are not conflicts: they are
    marked by :func:`duplicate_lines`."""
    out = pd.Series(pd.NA, index=frame.index, dtype="string")
    if frame.empty:
        return out
    keys = frame[identity].apply(lambda column: column.astype("string").fillna("").str.strip())
    values = frame[content].apply(lambda column: column.astype("string").fillna("").str.strip())
    versions = pd.concat([keys, values.add_prefix("_v_")], axis=1).drop_duplicates()
    clashing = versions.loc[versions.duplicated(identity, keep=False), identity]
    out[pd.MultiIndex.from_frame(keys).isin(pd.MultiIndex.from_frame(clashing))] = "true"
    return out


def duplicate_lines(frame: pd.DataFrame, columns: list[str], policy: str) -> pd.Series:
    """For each line that exactly repeats an earlier one (all of ``columns`` equal), the source line
    of the first copy, as ``policy`` counts repeats (see ``DUPLICATE_POLICIES``); null elsewhere."""
    if policy not in DUPLICATE_POLICIES:
        raise ValueError(f"unknown duplicate policy {policy!r}; expected one of {', '.join(DUPLICATE_POLICIES)}")
    out = pd.Series(pd.NA, index=frame.index, dtype="Int64")
    if frame.empty:
        return out
    groups = frame.groupby(columns, dropna=False, sort=False)
    first = groups[SOURCE_LINE].transform("min")
    repeat = frame[SOURCE_LINE] != first
    if policy == "repeated_days" and DAY in frame:
        sizes = groups[SOURCE_LINE].transform("size")
        per_day = pd.DataFrame({"day": frame[DAY], "size": sizes})
        # A day counts as repeated when every distinct line in it appears the same k >= 2 times.
        stats = per_day.groupby("day", dropna=False)["size"].agg(["min", "max"])
        repeated_days = set(stats[(stats["min"] == stats["max"]) & (stats["min"] >= 2)].index)
        repeat &= frame[DAY].isin(repeated_days)
    elif policy == "repeated_days":
        repeat &= False
    out[repeat] = first[repeat].astype("int64")
    return out


# Dates written with the day and month as numbers before the year: 03/04/2011, 3.4.2011, 03-04-11.
NUMERIC_DATE = re.compile(r"^\s*(\d{1,2})[/.-](\d{1,2})[/.-](\d{2,4})\b")
DATE_ORDERS = ("day_first", "month_first")


# A run's own date order (the DAG's date_order param, land --date-order), over the setting.
_RUN_DATE_ORDER: ContextVar[str | None] = ContextVar("run_date_order", default=None)


def configured_date_order() -> str | None:
    """The run's date order (:func:`dates_read_as`) or else ``PREFERENCE_DATE_ORDER``:
    ``day_first``, ``month_first`` or unset (``None``)."""
    run = _RUN_DATE_ORDER.get()
    if run is not None:
        return run
    setting = (os.environ.get("PREFERENCE_DATE_ORDER") or "").strip().lower() or None
    if setting is not None and setting not in DATE_ORDERS:
        raise SourceFormatError(f"PREFERENCE_DATE_ORDER must be day_first or month_first, not {setting!r}")
    return setting


@contextmanager
def dates_read_as(order: str | None) -> Iterator[None]:
    """Within the block, files whose numeric dates cannot decide their order read them as ``order``
    (``day_first`` or ``month_first``; ``None`` leaves it to ``PREFERENCE_DATE_ORDER``). A file that
    decides its order must still agree."""
    if order is not None and order not in DATE_ORDERS:
        raise SourceFormatError(f"date_order must be day_first or month_first, not {order!r}")
    token = _RUN_DATE_ORDER.set(order)
    try:
        yield
    finally:
        _RUN_DATE_ORDER.reset(token)


def date_order(times: pd.Series, source: str, column: str, setting: str | None) -> str | None:
    """Whether the file's numeric dates put the day or the month first, decided from the whole file:
    a first number above 12 anywhere means day first, a second one means month first. ``None``
    when the file has no such dates (ISO dates are never ambiguous).

    ``setting`` (``PREFERENCE_DATE_ORDER``: ``day_first`` or ``month_first``) says which for a file
    whose numbers never pass 12; it must agree with the file when the file decides.

    Raises:
        SourceFormatError: ambiguous without the setting, both orders in one file, or a setting
            that contradicts the file.
    """
    parts = times.astype("string").str.extract(NUMERIC_DATE).dropna()
    if parts.empty:
        return None
    first, second = parts[0].astype(int), parts[1].astype(int)
    day_first, month_first = bool((first > 12).any()), bool((second > 12).any())
    example = times[parts.index[0]]
    if day_first and month_first:
        raise SourceFormatError(
            f"{source}: mixed_date_order: column {column} has dates with the day first and dates with the "
            f"month first (e.g. {example!r}); expected one order in a file"
        )
    found = "day_first" if day_first else "month_first" if month_first else None
    if found is not None:
        if setting is not None and setting != found:
            raise SourceFormatError(
                f"{source}: column {column} has its dates {found.replace('_', ' ')}, but the date order "
                f"given (the run's date_order or PREFERENCE_DATE_ORDER) says {setting}"
            )
        return found
    if setting is None:
        raise SourceFormatError(
            f"{source}: ambiguous_dates: no date in column {column} tells whether the day or the month comes "
            f"first ({len(parts)} dates such as {example!r}, no number above 12); trigger with date_order "
            "(land --date-order) or set PREFERENCE_DATE_ORDER to day_first or month_first"
        )
    return setting


def assign_days(frame: pd.DataFrame, time_column: str, source: str = "the file", setting: str | None = None) -> None:
    """Add ``_day``: each line's UTC day; unreadable times get the frame's first day.

    Numeric dates (03/04/2011) are read in the file's order (:func:`date_order`) and landed as ISO
    8601 text, so validation, which sees one day at a time, reads them as the file meant; every
    other value stays as the file wrote it.
    """
    order = date_order(frame[time_column], source, time_column, setting)
    if order is not None:
        text = frame[time_column].astype("string")
        numeric = text.str.match(NUMERIC_DATE).fillna(False).astype(bool)
        parsed = pd.to_datetime(
            text[numeric].str.strip(), errors="coerce", utc=True, format="mixed", dayfirst=order == "day_first"
        )
        readable = parsed.notna()
        iso = parsed[readable].dt.strftime("%Y-%m-%dT%H:%M:%S+00:00")
        frame.loc[iso.index, time_column] = iso
    stamps = parse_timestamps(frame[time_column])
    future = (stamps > future_horizon()).fillna(False).astype(bool)
    days = stamps.dt.date.where(~future)
    outlying = outlying_days(days)
    days = days.where(~outlying)
    first_day = days.dropna().min() if days.notna().any() else None
    last_day = days.dropna().max() if days.notna().any() else None
    # Unreadable times land on the file's first day, times in the future on its last, and a day far
    # outside the file's run of days (a mistyped year) on the nearer end: validation quarantines them
    # there (unparseable_timestamp, future_timestamp, outside_logical_day) and no line is lost.
    landed = days.where(days.notna(), first_day)
    landed[future] = last_day
    if outlying.any():  # first_day by default, last_day when after the file's run of days
        landed[outlying & (stamps.dt.date > last_day)] = last_day
    frame[DAY] = landed


# A run of days apart from the rest of the file by more than OUTLYING_GAP_DAYS, holding at most
# OUTLYING_SHARE of the file's lines, is a mistake in the dates (2001 for 2011), not trading days.
OUTLYING_GAP_DAYS = 90
OUTLYING_SHARE = 0.01


def outlying_days(days: pd.Series) -> pd.Series:
    """Lines whose day lies in a small run of days far from the file's main run (see OUTLYING_*).

    Days are split into runs wherever two consecutive days with lines are more than
    ``OUTLYING_GAP_DAYS`` apart; every run but the largest that holds at most ``OUTLYING_SHARE`` of
    the lines is outlying. A file of two long periods keeps both."""
    known = days.dropna()
    counts = known.value_counts().sort_index()
    if len(counts) < 2:
        return pd.Series(False, index=days.index)
    stamps = pd.to_datetime(pd.Series(counts.index))
    runs = (stamps.diff().dt.days > OUTLYING_GAP_DAYS).cumsum().to_numpy()
    sizes = pd.Series(counts.to_numpy()).groupby(runs).sum()
    small = set(sizes[(sizes <= OUTLYING_SHARE * len(known)) & (sizes.index != sizes.idxmax())].index)
    if not small:
        return pd.Series(False, index=days.index)
    far = {day for day, run in zip(counts.index, runs, strict=True) if run in small}
    return days.isin(far).fillna(False).astype(bool)


def date_range(frame: pd.DataFrame) -> tuple[dt.date, dt.date]:
    """The first and last day with lines."""
    days = frame[DAY].dropna()
    return days.min(), days.max()


def day_tables(
    source: str, path: Path, lines: pd.DataFrame, today: pd.DataFrame, day: dt.date, tables: dict[str, pd.DataFrame]
) -> tuple[dict[str, pd.DataFrame], dict[str, object]]:
    """Complete an importer's tables for ``day`` (no reviews in these files) and the manifest facts."""
    from include.preference.schema import TABLES

    first, last = date_range(lines)
    tables = {**tables, "reviews": pd.DataFrame({c: pd.Series(dtype="string") for c in TABLES["reviews"].column_names})}
    facts: dict[str, object] = {
        "source": source,
        "file": path.name,
        "file_lines": len(lines),
        "lines_landed": len(today),
        "closed_day": bool(first <= day <= last and today.empty),
    }
    return {name: frame.reset_index(drop=True) for name, frame in tables.items()}, facts


def snapshot_first_seen(frame: pd.DataFrame, key: pd.Series) -> pd.Series:
    """The first day each key value appears in ``frame``."""
    return frame.assign(_key=key).groupby("_key")[DAY].min()
