"""Bring a landed table to the canonical types without losing a row.

Values that cannot be parsed become nulls in the typed frame and are reported per row, so the
rules can quarantine exactly those rows; nothing raises on bad values.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from include.preference.schema import TableSpec

ROW_ID = "_row"
# Set by the importers (include.preference.sources.files) on a line that exactly repeats an earlier
# one: the first copy's source line; null on every other line. Validation quarantines it as duplicate_line.
DUPLICATE_OF = "_duplicate_of"
# Set by an importer on every line whose identity another line shares with different content (two
# versions of one event: which is true is unknown); validation quarantines them all as conflicting_duplicate.
CONFLICTING = "_conflicting"
# Set by an importer on a line with more fields than the file's header (its fields were cut to the
# header's; the mark says what was beyond): validation quarantines it as malformed_line.
MALFORMED = "_malformed"
# The importers' marks on lines that are no row of their own (a wider line than the header, a copy of
# another line), with the row rule each is quarantined under; duplicate_keys judges only the rest.
LINE_MARKS = {MALFORMED: "malformed_line", DUPLICATE_OF: "duplicate_line", CONFLICTING: "conflicting_duplicate"}
# The logical day of each row when several days are validated together (``validate_days``).
ROW_DAY = "_logical_day"
# U+FFFD marks bytes that were not valid in the file's encoding; C0 controls never belong in text.
BAD_TEXT = re.compile(r"[\ufffd\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")
PARSE_RULES = {
    "timestamp": "unparseable_timestamp",
    "date": "unparseable_date",
    "int32": "unparseable_number",
    "int64": "unparseable_number",
    "float64": "unparseable_number",
    "bool": "unparseable_boolean",
}
# Identifiers: trimmed; a textual null is a null, not an id; no markup, quotes or backslashes.
NULL_SENTINELS = frozenset({"null", "none", "nan", "nil", "n/a", "na", "undefined", "#n/a", "-"})
ID_FORBIDDEN = re.compile(r"[<>\"'`\\]")
MAX_ID_LENGTH = 128
MAX_TEXT_LENGTH = 10_000  # titles, queries, review texts
# A time later than now by more than this is in the future (clock skew and time zones allowed for).
FUTURE_TOLERANCE = pd.Timedelta(days=1)
TRUE_WORDS = {"true", "t", "1", "yes", "y"}
FALSE_WORDS = {"false", "f", "0", "no", "n"}


@dataclass
class CastResult:
    """The typed frame (same rows, same order) and what did not parse."""

    frame: pd.DataFrame
    failures: dict[str, pd.Series] = field(default_factory=dict)  # rule -> boolean mask
    failed_columns: dict[str, pd.Series] = field(default_factory=dict)  # column -> boolean mask
    missing_columns: list[str] = field(default_factory=list)
    extra_columns: list[str] = field(default_factory=list)


def future_horizon() -> pd.Timestamp:
    """Times after this are in the future: now (UTC) plus ``FUTURE_TOLERANCE``. Importers and
    validation share it."""
    return pd.Timestamp.now(tz="UTC") + FUTURE_TOLERANCE


def _present(raw: pd.Series) -> pd.Series:
    """Non-null and not blank."""
    as_text = raw.astype("string")
    return raw.notna() & (as_text.str.strip() != "").fillna(False).astype(bool)


def parse_timestamps(raw: pd.Series) -> pd.Series:
    """Times as UTC timestamps (NaT where unreadable): ISO 8601 (a trailing " UTC" allowed), then
    any other unambiguous layout; naive times are taken as UTC. Importers and validation share it,
    so a line lands on the day validation will read it as."""
    if isinstance(raw.dtype, pd.DatetimeTZDtype):
        return raw.dt.tz_convert("UTC")
    if pd.api.types.is_datetime64_dtype(raw):
        return raw.dt.tz_localize("UTC")
    text = raw.astype("string").str.strip().str.replace(r"\s+UTC$", "+00:00", regex=True)
    parsed = pd.to_datetime(text, errors="coerce", utc=True, format="ISO8601")
    retry = parsed.isna() & text.notna()
    if retry.any():  # other unambiguous layouts, one value at a time (rare in practice)
        parsed[retry] = pd.to_datetime(text[retry], errors="coerce", utc=True, format="mixed")
    return parsed


def _parse_number(raw: pd.Series, kind: str) -> tuple[pd.Series, pd.Series]:
    numbers = pd.to_numeric(raw, errors="coerce") if raw.dtype == object or str(raw.dtype) == "string" else raw
    numbers = numbers.astype("float64")
    bad = pd.Series(False, index=raw.index)
    if kind != "float64":
        limit = np.iinfo(np.int32 if kind == "int32" else np.int64).max
        bad = numbers.notna() & ((numbers != np.round(numbers)) | (numbers.abs() > limit))
        numbers = numbers.where(~bad)
        return numbers.astype("Int32" if kind == "int32" else "Int64"), bad
    bad = numbers.notna() & ~np.isfinite(numbers)
    return numbers.where(~bad), bad


def _parse_bool(raw: pd.Series) -> pd.Series:
    if pd.api.types.is_bool_dtype(raw):
        return raw.astype("boolean")
    text = raw.astype("string").str.strip().str.lower()
    flags = pd.Series(pd.NA, index=raw.index, dtype="boolean")
    flags[text.isin(TRUE_WORDS).fillna(False).astype(bool)] = True
    flags[text.isin(FALSE_WORDS).fillna(False).astype(bool)] = False
    return flags


def is_identifier(column: str) -> bool:
    """Columns holding ids (``*_id``): trimmed, null sentinels nulled, checked for markup and length."""
    return column.endswith("_id")


def cast_table(raw: pd.DataFrame, spec: TableSpec) -> CastResult:
    """Cast ``raw`` (strings or already typed) to the canonical columns of ``spec``.

    Missing required columns are reported (a blocking problem for the caller); missing optional
    columns are added as nulls; extra columns are dropped and reported.
    """
    present_columns = set(raw.columns) - {ROW_ID, ROW_DAY}
    missing = [c.name for c in spec.columns if c.required and c.name not in present_columns]
    # Columns starting with "_" are lineage (e.g. the source line), kept in quarantine, not reported.
    extra = sorted(c for c in present_columns - set(spec.column_names) if not str(c).startswith("_"))
    result = CastResult(frame=pd.DataFrame(index=raw.index), missing_columns=missing, extra_columns=extra)
    if missing:
        return result
    typed: dict[str, pd.Series] = {}
    for mark, rule in LINE_MARKS.items():  # set by the importer (a malformed line, a copy of another)
        if mark in raw:
            copy = raw[mark].notna().to_numpy(dtype=bool)
            if copy.any():
                result.failures[rule] = pd.Series(copy, index=raw.index)
    for column in spec.columns:
        values = raw[column.name] if column.name in raw else pd.Series(None, index=raw.index, dtype="object")
        given = _present(values)
        bad = pd.Series(False, index=raw.index)
        if column.type == "timestamp":
            parsed = parse_timestamps(values)
            bad = given & parsed.isna()
            future = (parsed > future_horizon()).fillna(False).astype(bool)
            if future.any():
                result.failures["future_timestamp"] = result.failures.get("future_timestamp", future) | future
        elif column.type == "date":
            stamps = parse_timestamps(values)
            bad = given & stamps.isna()
            parsed = stamps.dt.date.where(stamps.notna(), None)
        elif column.type in ("int32", "int64", "float64"):
            parsed, out_of_type = _parse_number(values, column.type)
            bad = (given & parsed.isna()) | out_of_type
        elif column.type == "bool":
            parsed = _parse_bool(values)
            bad = given & parsed.isna()
        else:
            parsed = values.astype("string").where(given, None)
            encoding = parsed.str.contains(BAD_TEXT).fillna(False).astype(bool)
            if encoding.any():
                result.failures["bad_encoding"] = result.failures.get("bad_encoding", encoding) | encoding
            if is_identifier(column.name):
                parsed = parsed.str.strip()
                parsed = parsed.where(~parsed.str.lower().isin(NULL_SENTINELS).fillna(False).astype(bool), None)
                invalid = parsed.str.contains(ID_FORBIDDEN).fillna(False).astype(bool)
                if invalid.any():
                    result.failures["invalid_id"] = result.failures.get("invalid_id", invalid) | invalid
            limit = MAX_ID_LENGTH if is_identifier(column.name) else MAX_TEXT_LENGTH
            long = (parsed.str.len() > limit).fillna(False).astype(bool)
            if long.any():
                result.failures["field_too_long"] = result.failures.get("field_too_long", long) | long
        typed[column.name] = parsed
        if bad.any():
            rule = PARSE_RULES[column.type]
            result.failures[rule] = result.failures.get(rule, bad) | bad
            result.failed_columns[column.name] = bad
    frame = pd.DataFrame(typed, index=raw.index)
    frame[ROW_ID] = raw[ROW_ID].to_numpy() if ROW_ID in raw else np.arange(len(raw))
    if ROW_DAY in raw:
        frame[ROW_DAY] = raw[ROW_DAY].to_numpy()
    result.frame = frame
    return result
