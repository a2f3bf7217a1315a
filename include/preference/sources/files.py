"""What every file importer shares: read a CSV as text, fail clearly, assign each line one day."""

from __future__ import annotations

import datetime as dt
from functools import lru_cache
from pathlib import Path

import pandas as pd

from include.preference.errors import SourceFormatError
from include.preference.validation.casting import parse_timestamps

SOURCE_LINE = "_source_line"
DAY = "_day"


def read_text_csv(path: Path, columns: tuple[str, ...], time_column: str | None) -> pd.DataFrame:
    """The whole file as text, with ``_source_line`` and (given a time column) each line's ``_day``.

    BOMs, CRLF, gzip and quoted newlines are handled; undecodable bytes become U+FFFD (validation
    quarantines them as bad_encoding). Lines whose time cannot be read get the file's first day,
    so every line lands exactly once. Cached per file version.

    Raises:
        SourceFormatError: not a CSV file, or a required column is missing.
    """
    stat = path.stat()
    return _read_cached(str(path), stat.st_mtime_ns, stat.st_size, columns, time_column).copy()


@lru_cache(maxsize=4)
def _read_cached(
    path: str, mtime_ns: int, size: int, columns: tuple[str, ...], time_column: str | None
) -> pd.DataFrame:
    try:
        frame = pd.read_csv(
            path,
            dtype=str,
            keep_default_na=False,
            encoding="utf-8-sig",
            encoding_errors="replace",
            compression="infer",
        )
    except (pd.errors.ParserError, UnicodeDecodeError, EOFError, OSError, ValueError) as error:
        raise SourceFormatError(f"{path} is not a readable CSV file: {error}") from error
    frame.columns = [str(c).strip() for c in frame.columns]
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise SourceFormatError(
            f"{path}: missing_columns ({len(missing)}): {', '.join(missing)}; "
            f"found {', '.join(map(str, frame.columns))}"
        )
    frame[SOURCE_LINE] = range(2, len(frame) + 2)  # line numbers as in the file (header is line 1)
    if time_column is not None:
        assign_days(frame, time_column)
    return frame


def assign_days(frame: pd.DataFrame, time_column: str) -> None:
    """Add ``_day``: each line's UTC day; unreadable times get the frame's first day."""
    days = parse_timestamps(frame[time_column]).dt.date
    first_day = days.dropna().min() if days.notna().any() else None
    frame[DAY] = days.where(days.notna(), first_day)


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
