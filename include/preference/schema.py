"""The canonical raw tables: names, types, keys and allowed values, in one place.

Every source lands these tables; validation, features and the tests read their definitions here.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import pyarrow as pa

EVENT_TYPES = ("view", "search", "add_to_cart", "purchase")
RATING_RANGE = (1, 5)
# Stock codes that are services or bookkeeping lines, not products (upper-cased before comparing).
NON_PRODUCT_CODES = frozenset(
    {
        "POST",
        "DOT",
        "M",
        "C2",
        "D",
        "S",
        "B",
        "CRUK",
        "PADS",
        "BANK CHARGES",
        "AMAZONFEE",
        "ADJUST",
        "ADJUST2",
        "TEST001",
        "TEST002",
    }
)


@dataclass(frozen=True)
class Column:
    """One column: name, Arrow type name, and whether a row without it is invalid."""

    name: str
    type: str
    required: bool = True
    description: str = ""


@dataclass(frozen=True)
class TableSpec:
    """One canonical table."""

    name: str
    columns: tuple[Column, ...]
    key: tuple[str, ...]
    time_column: str | None
    description: str
    may_be_empty: bool = False

    @property
    def column_names(self) -> tuple[str, ...]:
        return tuple(c.name for c in self.columns)

    def arrow_schema(self) -> "pa.Schema":
        """The Arrow schema of this table (timestamps are microseconds, UTC)."""
        import pyarrow as pa

        types = {
            "string": pa.string(),
            "int32": pa.int32(),
            "int64": pa.int64(),
            "float64": pa.float64(),
            "bool": pa.bool_(),
            "date": pa.date32(),
            "timestamp": pa.timestamp("us", tz="UTC"),
        }
        return pa.schema([pa.field(c.name, types[c.type], nullable=not c.required) for c in self.columns])


TABLES: dict[str, TableSpec] = {
    spec.name: spec
    for spec in (
        TableSpec(
            name="events",
            description="Clickstream: one row per view, search, add-to-cart or purchase.",
            key=("event_id",),
            time_column="event_time",
            columns=(
                Column("event_id", "string"),
                Column("event_time", "timestamp"),
                Column("customer_id", "string"),
                Column("session_id", "string"),
                Column("event_type", "string", description=f"one of {', '.join(EVENT_TYPES)}"),
                Column("product_id", "string", required=False, description="empty for searches"),
                Column("quantity", "int32", required=False, description="add_to_cart and purchase"),
                Column("price", "float64", required=False, description="unit price seen, empty for searches"),
                Column("query", "string", required=False, description="search text"),
            ),
        ),
        TableSpec(
            name="orders",
            description="Order lines; a cancellation is a line with negative quantity.",
            key=("order_id", "line_number"),
            time_column="order_time",
            columns=(
                Column("order_id", "string"),
                Column("line_number", "int32"),
                Column("order_time", "timestamp"),
                Column("customer_id", "string"),
                Column("product_id", "string"),
                Column("quantity", "int32"),
                Column("unit_price", "float64"),
                Column("is_cancellation", "bool"),
            ),
        ),
        TableSpec(
            name="products",
            description="Catalogue snapshot as of the day.",
            key=("product_id",),
            time_column=None,
            columns=(
                Column("product_id", "string"),
                Column("title", "string", required=False),
                Column("category_path", "string", required=False, description="levels joined by '/'"),
                Column("brand", "string", required=False),
                Column("price", "float64"),
                Column("first_seen", "date"),
            ),
        ),
        TableSpec(
            name="customers",
            description="Customer records known as of the day.",
            key=("customer_id",),
            time_column=None,
            columns=(
                Column("customer_id", "string"),
                Column("first_seen", "date"),
                Column("country", "string", required=False),
                Column("age_band", "string", required=False),
            ),
        ),
        TableSpec(
            name="reviews",
            description="Product reviews written that day.",
            may_be_empty=True,
            key=("review_id",),
            time_column="review_time",
            columns=(
                Column("review_id", "string"),
                Column("review_time", "timestamp"),
                Column("customer_id", "string"),
                Column("product_id", "string"),
                Column("rating", "int32", description="1 to 5"),
                Column("text", "string", required=False),
            ),
        ),
    )
}
