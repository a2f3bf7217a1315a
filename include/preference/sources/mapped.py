"""Generic importer: CSV or Parquet drops described by a column-mapping file.

The mapping (YAML) names, per canonical table, the file, its format, which source column feeds
each canonical column, and constants::

    tables:
      orders:
        file: orders.csv              # relative to the mapping file
        format: csv                   # csv (default) or parquet
        columns: {order_id: OrderRef, line_number: Line, order_time: CreatedAt, customer_id: Buyer,
                  product_id: Sku, quantity: Qty, unit_price: Price}
        constants: {is_cancellation: "false"}

Each run lands one logical day. Fact tables (events, orders, reviews) are split by their time
column; dimension tables (products, customers) are snapshots. Tables the mapping leaves out are
derived where that is sound: purchase events from orders or orders from purchase events, product
and customer snapshots from the facts, no reviews. Values stay text; validation types them.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
import yaml

from include.preference.errors import SourceFormatError
from include.preference.schema import TABLES
from include.preference.sources.files import (
    DAY,
    DUPLICATE_OF,
    MALFORMED,
    SOURCE_LINE,
    assign_days,
    configured_date_order,
    date_range,
    duplicate_lines,
    read_text_csv,
)

FACTS = ("events", "orders", "reviews")


@dataclass(frozen=True)
class TableMapping:
    """How one canonical table is read from one file."""

    table: str
    file: Path
    format: str = "csv"
    columns: dict[str, str] = field(default_factory=dict)
    constants: dict[str, str] = field(default_factory=dict)


TABLE_KEYS = ("file", "format", "columns", "constants")


def load_mapping(path: Path) -> dict[str, TableMapping]:
    """Read and check a mapping file; every mistake is named, all of them in one error.

    A table's ``file`` is a relative path to a file in the mapping's folder or below it; absolute
    paths, ``..`` out of the folder and symbolic links that lead out of it are refused (a mapping
    names data beside it, never a file elsewhere on the host).

    Raises:
        SourceFormatError: not a YAML mapping, unknown tables, keys or columns, a required column
            neither mapped nor constant, a missing or unsafe ``file``, an unknown format.
    """
    try:
        document = yaml.safe_load(path.read_text())
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as error:
        raise SourceFormatError(f"mapping file {path} cannot be read: {error}") from error
    if document is None:
        document = {}
    if not isinstance(document, dict):
        raise SourceFormatError(
            f"mapping file {path}: expected a YAML mapping with a 'tables:' section, got a {type(document).__name__}"
        )
    tables = document.get("tables")
    if not isinstance(tables, dict) or not tables:
        raise SourceFormatError(f"mapping file {path} maps no tables (expected a 'tables:' section of table: settings)")
    folder = path.parent.resolve()
    mistakes: list[str] = []
    mappings: dict[str, TableMapping] = {}
    for name, spec in tables.items():
        if name not in TABLES:
            mistakes.append(f"unknown table {name!r}; known: {', '.join(TABLES)}")
            continue
        if not isinstance(spec, dict):
            mistakes.append(f"{name}: expected settings ({', '.join(TABLE_KEYS)}), got {type(spec).__name__}")
            continue
        extra = sorted(str(k) for k in set(spec) - set(TABLE_KEYS))
        if extra:
            mistakes.append(f"{name}: unknown setting(s) {', '.join(extra)}; known: {', '.join(TABLE_KEYS)}")
        sections = {}
        for section in ("columns", "constants"):
            value = spec.get(section) or {}
            if not isinstance(value, dict):
                mistakes.append(f"{name}: {section} must map canonical column to source, got {type(value).__name__}")
                value = {}
            sections[section] = {str(k): str(v) for k, v in value.items()}
        columns, constants = sections["columns"], sections["constants"]
        unknown = sorted((set(columns) | set(constants)) - set(TABLES[name].column_names))
        if unknown:
            mistakes.append(f"{name} has no column(s) {', '.join(unknown)}")
        unmapped = [c.name for c in TABLES[name].columns if c.required and c.name not in columns | constants]
        if unmapped:
            mistakes.append(f"missing_columns ({len(unmapped)}) for {name}: {', '.join(unmapped)}")
        file_format = str(spec.get("format", "csv")).lower()
        if file_format not in ("csv", "parquet"):
            mistakes.append(f"{name} format must be csv or parquet, not {file_format}")
        file = _confined_file(folder, name, spec.get("file"), mistakes)
        if file is not None:
            mappings[name] = TableMapping(name, file, file_format, columns, constants)
    if not {"events", "orders"} & set(tables):
        mistakes.append("must map events or orders")
    if mistakes:
        listed = "; ".join(mistakes)
        raise SourceFormatError(f"mapping file {path}: {len(mistakes)} mistake(s): {listed}")
    return mappings


def _confined_file(folder: Path, table: str, value: object, mistakes: list[str]) -> Path | None:
    """The table's file, resolved inside ``folder``; ``None`` (and a mistake) when it is not."""
    if value is None or str(value).strip() == "":
        mistakes.append(f"{table}: no file (a path relative to the mapping file)")
        return None
    if not isinstance(value, str):
        mistakes.append(f"{table}: file must be a path, got {type(value).__name__}")
        return None
    if "\x00" in value:
        mistakes.append(f"{table}: file {value!r} holds a NUL byte")
        return None
    named = Path(value)
    if named.is_absolute():
        mistakes.append(f"{table}: file {value!r} is absolute; name a file beside the mapping (relative path)")
        return None
    try:
        resolved = (folder / named).resolve()  # follows symbolic links
        if not resolved.is_relative_to(folder):
            mistakes.append(f"{table}: file {value!r} leads out of the mapping's folder {folder} (to {resolved})")
            return None
        if not resolved.is_file():
            mistakes.append(f"{table}: file {value!r} does not exist in {folder}")
            return None
    except OSError as error:  # a name too long, a loop of links, a folder that cannot be read
        mistakes.append(f"{table}: file {value[:200]!r} cannot be opened: {error.strerror or error}")
        return None
    return resolved


def read_mapped(mapping: TableMapping) -> pd.DataFrame:
    """The mapped table as text with canonical column names, ``_source_line`` and (facts) ``_day``."""
    sources = tuple(dict.fromkeys(mapping.columns.values()))
    if mapping.format == "parquet":
        try:
            raw = pd.read_parquet(mapping.file)
        except (OSError, ValueError) as error:
            raise SourceFormatError(f"{mapping.file} is not a readable Parquet file: {error}") from error
        missing = [c for c in sources if c not in raw.columns]
        if missing:
            raise SourceFormatError(f"{mapping.file}: missing_columns ({len(missing)}): {', '.join(missing)}")
        raw = raw.astype("string")
        raw[SOURCE_LINE] = range(1, len(raw) + 1)  # row numbers in the file
    else:
        raw = read_text_csv(mapping.file, sources, None)
    frame = pd.DataFrame({canonical: raw[source] for canonical, source in mapping.columns.items()})
    for canonical, value in mapping.constants.items():
        frame[canonical] = value
    frame[SOURCE_LINE] = raw[SOURCE_LINE].to_numpy()
    if DUPLICATE_OF in raw:
        frame[DUPLICATE_OF] = raw[DUPLICATE_OF].to_numpy()
    else:  # Parquet: rows repeating an earlier row in every column
        frame[DUPLICATE_OF] = duplicate_lines(raw, [c for c in raw.columns if c != SOURCE_LINE], "all").to_numpy()
    frame[MALFORMED] = raw[MALFORMED].to_numpy() if MALFORMED in raw else pd.NA
    time_column = TABLES[mapping.table].time_column
    if time_column:
        assign_days(frame, time_column, str(mapping.file), configured_date_order())
    return frame


def _canonical(frame: pd.DataFrame, table: str) -> pd.DataFrame:
    out = pd.DataFrame({c: frame.get(c) for c in TABLES[table].column_names}, index=frame.index)
    for lineage in (SOURCE_LINE, DUPLICATE_OF, MALFORMED):
        if lineage in frame:
            out[lineage] = frame[lineage]
    return out.reset_index(drop=True)


def land_tables(mapping_path: Path, day: dt.date) -> tuple[dict[str, pd.DataFrame], dict[str, object]]:
    """The raw tables for ``day`` and facts for the manifests."""
    mappings = load_mapping(mapping_path)
    read = {name: read_mapped(mapping) for name, mapping in mappings.items()}
    facts_read = [read[name] for name in FACTS if name in read]
    days = pd.concat([f[[DAY]] for f in facts_read], ignore_index=True)
    first, last = date_range(days)
    upto = {name: frame[frame[DAY] <= day] for name, frame in read.items() if name in FACTS}
    today = {name: frame[frame[DAY] == day] for name, frame in upto.items()}

    tables: dict[str, pd.DataFrame] = {name: _canonical(frame, name) for name, frame in today.items()}
    if "events" not in tables:
        orders = today["orders"]
        bought = orders[orders["is_cancellation"].astype("string").str.lower().isin(["false", "0", "no", "f"])]
        tables["events"] = _canonical(
            bought.assign(
                event_id=bought["order_id"] + "-" + bought["line_number"],
                event_time=bought["order_time"],
                session_id=bought["order_id"],
                event_type="purchase",
                price=bought["unit_price"],
            ),
            "events",
        )
    if "orders" not in tables:
        events = today["events"]
        bought = events[events["event_type"].str.strip() == "purchase"]
        tables["orders"] = _canonical(
            bought.assign(
                order_id=bought["session_id"],
                line_number=(bought.groupby("session_id").cumcount() + 1).astype(str),
                order_time=bought["event_time"],
                unit_price=bought["price"],
                is_cancellation="false",
            ),
            "orders",
        )
    if "reviews" not in tables:
        tables["reviews"] = _canonical(pd.DataFrame(), "reviews")

    history = pd.concat(
        [
            f[f[MALFORMED].isna()].assign(_price=f.get("price", f.get("unit_price")))
            for f in upto.values()
            if "product_id" in f
        ],
        ignore_index=True,
    )
    for name, key in (("products", "product_id"), ("customers", "customer_id")):
        if name in read:
            snapshot = read[name]
            if "first_seen" in snapshot:
                seen = pd.to_datetime(snapshot["first_seen"], errors="coerce", utc=True).dt.date
                snapshot = snapshot[seen.isna() | (seen <= day)]
            tables[name] = _canonical(snapshot, name)
            continue
        known = history[history[key].notna() & (history[key].astype("string").str.strip() != "")]
        grouped = known.groupby(key)
        snapshot = pd.DataFrame(
            {key: grouped[DAY].min().index, "first_seen": grouped[DAY].min().astype(str).to_numpy()}
        )
        if name == "products":
            snapshot["price"] = grouped["_price"].last().to_numpy()
        tables[name] = _canonical(snapshot, name)
    facts: dict[str, object] = {
        "source": "mapped",
        "mapping": mapping_path.name,
        "files": sorted(m.file.name for m in mappings.values()),
        "lines_landed": int(sum(len(f) for f in today.values())),
        "closed_day": bool(first <= day <= last and all(f.empty for f in today.values())),
    }
    return tables, facts
