"""Importer for UCI Online Retail invoice files (``InvoiceNo,StockCode,...,CustomerID,Country``).

Each run lands one logical day: the invoice lines of that day as ``orders`` (and matching
``purchase`` events), plus snapshots of the products and customers seen up to that day. Values stay
text as they were in the file; validation parses them, so nothing is lost to a bad value.

* Cancellations (InvoiceNo starting with ``C``) are landed with ``is_cancellation = true``.
* ``CustomerID`` arrives as ``17850.0`` and is normalised to ``17850``.
* Rows whose InvoiceDate cannot be read land with the file's first day, where validation
  quarantines them (``unparseable_timestamp``): every line of the file lands exactly once.
* A day inside the file's range without any invoice is landed empty and marked ``closed_day``.
"""

from __future__ import annotations

import datetime as dt
from functools import lru_cache
from pathlib import Path

import pandas as pd

from include.preference.sources.files import (
    DAY,
    DUPLICATE_OF,
    MALFORMED,
    SOURCE_LINE,
    configured_date_order,
    day_tables,
    line_digests,
    read_text_csv,
)

COLUMNS = ("InvoiceNo", "StockCode", "Description", "Quantity", "InvoiceDate", "UnitPrice", "CustomerID", "Country")


def read_invoices(path: Path) -> pd.DataFrame:
    """The whole file as text, with each line's day (``_day``) and position in its invoice (``_line``).

    Raises:
        SourceFormatError: the file is not a CSV with the Online Retail columns.
    """
    # An invoice may list the same product on several identical lines (a till ringing an item again,
    # lines apart): only a day whose every line repeats (landed twice) counts as duplicated.
    frame = read_text_csv(path, COLUMNS, "InvoiceDate", duplicates="repeated_days")
    frame["_line"] = frame.groupby("InvoiceNo", sort=False).cumcount() + 1
    return frame


def _customer_id(raw: pd.Series) -> pd.Series:
    text = raw.str.strip()
    return text.str.replace(r"^(\d+)\.0+$", r"\1", regex=True)


def _prepared(path: Path) -> pd.DataFrame:
    """The file with the per-line values every day's snapshots need, derived once per file."""
    stat = path.stat()
    return _prepared_cached(str(path), stat.st_mtime_ns, stat.st_size, configured_date_order())


@lru_cache(maxsize=2)
def _prepared_cached(path: str, mtime_ns: int, size: int, order: str | None) -> pd.DataFrame:  # noqa: ARG001
    invoices = read_invoices(Path(path))
    invoices["_customer"] = _customer_id(invoices["CustomerID"])
    invoices["_code"] = invoices["StockCode"].str.strip()
    invoices["_description"] = invoices["Description"].str.strip()
    invoices["_price"] = pd.to_numeric(invoices["UnitPrice"], errors="coerce")
    return invoices


def _event_ids(lines: pd.DataFrame) -> pd.Series:
    """Each purchase's identity from its content: ``<invoice>-<digest of the line>``, and ``-<k>`` on
    the k-th identical line of an invoice (an invoice may ring one product up on identical lines)."""
    digests = line_digests(lines, list(COLUMNS))
    ids = lines["InvoiceNo"].str.strip() + "-" + digests
    copy = digests.groupby([lines["InvoiceNo"].str.strip(), digests]).cumcount() + 1
    return ids.where(copy == 1, ids + "-" + copy.astype(str))


def land_tables(path: Path, day: dt.date) -> tuple[dict[str, pd.DataFrame], dict[str, object]]:
    """The raw tables for ``day`` and facts for the manifests (closed day, lines in the file)."""
    invoices = _prepared(path)  # shared between days: read, never modified
    upto = invoices[invoices[DAY] <= day]
    today = invoices[invoices[DAY] == day]
    is_cancellation = today["InvoiceNo"].str.strip().str.upper().str.startswith("C")

    orders = pd.DataFrame(
        {
            "order_id": today["InvoiceNo"].str.strip(),
            "line_number": today["_line"].astype(str),
            "order_time": today["InvoiceDate"],
            "customer_id": _customer_id(today["CustomerID"]),
            "product_id": today["StockCode"].str.strip(),
            "quantity": today["Quantity"],
            "unit_price": today["UnitPrice"],
            "is_cancellation": is_cancellation.map({True: "true", False: "false"}),
            SOURCE_LINE: today[SOURCE_LINE],
            DUPLICATE_OF: today[DUPLICATE_OF],
            MALFORMED: today[MALFORMED],
        }
    )
    purchases = today[~is_cancellation]
    events = pd.DataFrame(
        {
            "event_id": _event_ids(purchases),
            "event_time": purchases["InvoiceDate"],
            "customer_id": _customer_id(purchases["CustomerID"]),
            "session_id": purchases["InvoiceNo"].str.strip(),
            "event_type": "purchase",
            "product_id": purchases["StockCode"].str.strip(),
            "quantity": purchases["Quantity"],
            "price": purchases["UnitPrice"],
            "query": None,
            SOURCE_LINE: purchases[SOURCE_LINE],
            DUPLICATE_OF: purchases[DUPLICATE_OF],
            MALFORMED: purchases[MALFORMED],
        }
    )

    sold = upto[upto[MALFORMED].isna()]  # a malformed line's fields may sit in the wrong columns
    priced = sold[sold["_price"] > 0].groupby("_code")["UnitPrice"].last()
    described = sold[sold["_description"] != ""].groupby("_code")["_description"].last()
    first_seen = sold.groupby("_code")[DAY].min()
    products = pd.DataFrame({"product_id": first_seen.index})
    products["title"] = products["product_id"].map(described)
    products["category_path"] = None
    products["brand"] = None
    products["price"] = products["product_id"].map(priced).fillna("0")
    products["first_seen"] = products["product_id"].map(first_seen).astype(str)

    known = sold[sold["_customer"] != ""]
    by_customer = known.groupby("_customer")
    customers = pd.DataFrame(
        {
            "customer_id": by_customer[DAY].min().index,
            "first_seen": by_customer[DAY].min().astype(str).to_numpy(),
            "country": by_customer["Country"].last().str.strip().to_numpy(),
            "age_band": None,
        }
    )
    tables = {"events": events, "orders": orders, "products": products, "customers": customers}
    return day_tables("online_retail", path, invoices, today, day, tables)
