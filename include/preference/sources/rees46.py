"""Importer for REES46-style clickstream files (``event_time,event_type,product_id,...,user_session``).

Each run lands one logical day: the day's events (``cart`` becomes ``add_to_cart``; other unknown
types are landed as they are and quarantined by validation), purchases as order lines (one order
per session), and snapshots of the products and customers seen up to that day. Values stay text.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pandas as pd

from include.preference.sources.files import (
    DAY,
    DUPLICATE_OF,
    MALFORMED,
    SOURCE_LINE,
    conflicting_lines,
    day_tables,
    line_digests,
    read_text_csv,
    snapshot_first_seen,
)
from include.preference.validation.casting import CONFLICTING

COLUMNS = (
    "event_time",
    "event_type",
    "product_id",
    "category_id",
    "category_code",
    "brand",
    "price",
    "user_id",
    "user_session",
)
EVENT_TYPES = {"view": "view", "cart": "add_to_cart", "purchase": "purchase"}
# What makes an event itself (the file has no event id): who did what to which product, when, in which
# session. Lines that agree on these and differ elsewhere (price, category, brand) are two versions of
# one event: every copy is quarantined (conflicting_duplicate). Exact repeats are duplicate_line.
IDENTITY = ["event_time", "event_type", "product_id", "user_id", "user_session"]


def land_tables(path: Path, day: dt.date) -> tuple[dict[str, pd.DataFrame], dict[str, object]]:
    """The raw tables for ``day`` and facts for the manifests."""
    events_in = read_text_csv(path, COLUMNS, "event_time")
    # A malformed line's fields may sit in the wrong columns: it lands (to be quarantined) but no
    # snapshot or conflict is made from it.
    upto = events_in[(events_in[DAY] <= day) & events_in[MALFORMED].isna()]
    today = events_in[events_in[DAY] == day]
    well_formed = today[today[MALFORMED].isna()]
    kind = today["event_type"].str.strip()
    mapped = kind.map(EVENT_TYPES).fillna(kind)
    in_basket = mapped.isin(["add_to_cart", "purchase"])
    conflicts = conflicting_lines(well_formed, IDENTITY, [c for c in COLUMNS if c not in IDENTITY]).reindex(today.index)
    events = pd.DataFrame(
        {
            # The event's identity from its content, whatever the file's name or the line's place in it.
            "event_id": line_digests(today, IDENTITY),
            "event_time": today["event_time"],
            "customer_id": today["user_id"].str.strip(),
            "session_id": today["user_session"].str.strip(),
            "event_type": mapped,
            "product_id": today["product_id"].str.strip(),
            "quantity": in_basket.map({True: "1", False: None}),
            "price": today["price"],
            "query": None,
            SOURCE_LINE: today[SOURCE_LINE],
            DUPLICATE_OF: today[DUPLICATE_OF],
            CONFLICTING: conflicts,
            MALFORMED: today[MALFORMED],
        }
    )
    bought = today[mapped == "purchase"]
    orders = pd.DataFrame(
        {
            "order_id": bought["user_session"].str.strip(),
            "line_number": (bought.groupby("user_session").cumcount() + 1).astype(str),
            "order_time": bought["event_time"],
            "customer_id": bought["user_id"].str.strip(),
            "product_id": bought["product_id"].str.strip(),
            "quantity": "1",
            "unit_price": bought["price"],
            "is_cancellation": "false",
            SOURCE_LINE: bought[SOURCE_LINE],
            DUPLICATE_OF: bought[DUPLICATE_OF],
            CONFLICTING: conflicts[bought.index],
            MALFORMED: bought[MALFORMED],
        }
    )
    product_key = upto["product_id"].str.strip()
    latest = upto.assign(_key=product_key).groupby("_key").last()
    products = pd.DataFrame(
        {
            "product_id": latest.index,
            "title": None,
            "category_path": latest["category_code"]
            .str.strip()
            .str.replace(".", "/", regex=False)
            .replace("", None)
            .to_numpy(),
            "brand": latest["brand"].str.strip().replace("", None).to_numpy(),
            "price": latest["price"].to_numpy(),
            "first_seen": snapshot_first_seen(upto, product_key).reindex(latest.index).astype(str).to_numpy(),
        }
    )
    customer_first = snapshot_first_seen(upto, upto["user_id"].str.strip())
    customers = pd.DataFrame(
        {
            "customer_id": customer_first.index,
            "first_seen": customer_first.astype(str).to_numpy(),
            "country": None,
            "age_band": None,
        }
    )
    tables = {"events": events, "orders": orders, "products": products, "customers": customers}
    return day_tables("rees46", path, events_in, today, day, tables)
