"""The validation suites, written as code: one Great Expectations suite per canonical table.

Every expectation carries ``meta={"rule": ..., "kind": "row" | "blocking"}``:

* row rules flag single rows; those rows go to ``quarantine/`` with the rule they broke;
* blocking rules judge the whole day (keys, emptiness, volume, freshness); a failure stops the run.

Rules are listed in priority order: a row that breaks several is filed under the first.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from typing import Any

from include.preference.schema import EVENT_TYPES, NON_PRODUCT_CODES, RATING_RANGE, TABLES, TableSpec

SECONDS = "_seconds_in_day"
# Several days at once: the latest time of the row's own day (stale_data judges each day).
DAY_LAST_SECONDS = "_day_last_seconds"
PRODUCT_CODE = "_product_code"
# Orphan checks read precomputed flags: a value set of every known id would bloat the Data Docs.
KNOWN_PRODUCT = "_known_product"
KNOWN_CUSTOMER = "_known_customer"
# The table's key as one value (with the row's day when several days are validated together), null on
# rows the importer marked (malformed_line, duplicate_line, conflicting_duplicate): duplicate_keys judges the rest.
TABLE_KEY = "_table_key"
DAY_SECONDS = 86_400
# Rules found while casting, before any expectation runs (priority order).
PARSE_RULE_ORDER = (
    "malformed_line",
    "duplicate_line",
    "conflicting_duplicate",
    "unparseable_timestamp",
    "future_timestamp",
    "unparseable_date",
    "unparseable_number",
    "unparseable_boolean",
    "bad_encoding",
    "invalid_id",
    "field_too_long",
)
# Blocking rules found before the suite runs.
STRUCTURE_RULES = ("missing_columns", "wrong_type")


# Numeric columns judged for plausibility (a quantity or price of 10^12 is a typo or a test row).
PLAUSIBLE_COLUMNS = ("quantity", "price", "unit_price")


@dataclass(frozen=True)
class TrailingStats:
    """What recent days looked like: row counts, the time of day of their last row, and the 99.9th
    percentile of each plausibility column's validated values (one per day that had values)."""

    row_counts: tuple[int, ...]
    last_seconds: tuple[float, ...]
    p999: dict[str, tuple[float, ...]] = field(default_factory=dict)


@dataclass(frozen=True)
class Plausibility:
    """Upper bounds of plausible values: ``factor`` times the largest 99.9th percentile of the
    trailing days (robust to a few outliers on those days), never above the hard bound; the hard
    bound alone until ``min_trailing_days`` days have values (a first day, a history file)."""

    max_quantity: float = 1_000_000.0
    max_price: float = 10_000_000.0
    factor: float = 20.0

    def hard_bound(self, column: str) -> float:
        return self.max_quantity if column == "quantity" else self.max_price


@dataclass(frozen=True)
class RuleContext:
    """What a suite needs to know about the day it judges."""

    day: dt.date
    known_products: frozenset[str] | None = None
    known_customers: frozenset[str] | None = None
    trailing: TrailingStats | None = None
    closed_day: bool = False
    volume_factor: float = 3.0
    truncation_hours: float = 8.0
    min_trailing_days: int = 3
    # Several days validated together (history files): every row carries its day (``ROW_DAY``),
    # row rules judge it against that day, blocking rules judge each day. No trailing statistics.
    days: tuple[dt.date, ...] = ()
    closed_days: frozenset[dt.date] = frozenset()
    plausibility: Plausibility = field(default_factory=Plausibility)

    @property
    def several_days(self) -> bool:
        return bool(self.days)

    def value_bound(self, column: str) -> float:
        """The largest plausible value of ``column`` on this day (see :class:`Plausibility`)."""
        hard = self.plausibility.hard_bound(column)
        recent = self.trailing.p999.get(column, ()) if self.trailing is not None else ()
        if len(recent) < self.min_trailing_days:
            return hard
        return min(hard, self.plausibility.factor * max(recent))


@dataclass(frozen=True)
class Rule:
    """One expectation with the rule name it enforces."""

    name: str
    kind: str  # "row" or "blocking"
    expectation: Any = field(compare=False)


def _meta(name: str, kind: str) -> dict[str, str]:
    return {"rule": name, "kind": kind}


def _blocking(name: str, expectation_class: Any, **kwargs: Any) -> Rule:
    return Rule(name, "blocking", expectation_class(meta=_meta(name, "blocking"), **kwargs))


def table_rules(spec: TableSpec, ctx: RuleContext, row_count: int) -> list[Rule]:
    """The suite for one table on one day, in priority order."""
    import great_expectations.expectations as gxe

    rules: list[Rule] = []

    def row(name: str, expectation_class: Any, **kwargs: Any) -> None:
        rules.append(Rule(name, "row", expectation_class(meta=_meta(name, "row"), **kwargs)))

    def blocking(name: str, expectation_class: Any, **kwargs: Any) -> None:
        rules.append(_blocking(name, expectation_class, **kwargs))

    for column in spec.columns:
        if column.required:
            row("missing_required", gxe.ExpectColumnValuesToNotBeNull, column=column.name)
    columns = set(spec.column_names)
    if "event_type" in columns:
        row("unknown_event_type", gxe.ExpectColumnValuesToBeInSet, column="event_type", value_set=list(EVENT_TYPES))
    if spec.time_column:
        row(
            "outside_logical_day",
            gxe.ExpectColumnValuesToBeBetween,
            column=SECONDS,
            min_value=0,
            max_value=DAY_SECONDS,
            strict_max=True,
        )
    if spec.name == "events":
        from great_expectations.expectations.row_conditions import Column as RowColumn

        row(
            "missing_product",
            gxe.ExpectColumnValuesToNotBeNull,
            column="product_id",
            row_condition=RowColumn("event_type") != "search",
        )
    if spec.name == "orders":
        row("cancellation", gxe.ExpectColumnValuesToBeInSet, column="is_cancellation", value_set=[False])
    for price in ("price", "unit_price"):
        if price in columns:
            row("non_positive_price", gxe.ExpectColumnValuesToBeBetween, column=price, min_value=0, strict_min=True)
    if "quantity" in columns:
        row("non_positive_quantity", gxe.ExpectColumnValuesToBeBetween, column="quantity", min_value=0, strict_min=True)
    for plausible in PLAUSIBLE_COLUMNS:
        if plausible in columns:
            bound = ctx.value_bound(plausible)
            row("implausible_value", gxe.ExpectColumnValuesToBeBetween, column=plausible, max_value=bound)
    if "rating" in columns:
        low, high = RATING_RANGE
        row("rating_out_of_range", gxe.ExpectColumnValuesToBeBetween, column="rating", min_value=low, max_value=high)
    if "product_id" in columns:
        row(
            "non_product_code",
            gxe.ExpectColumnValuesToNotBeInSet,
            column=PRODUCT_CODE,
            value_set=sorted(NON_PRODUCT_CODES),
        )
    if spec.name not in ("products", "customers"):
        if ctx.known_products is not None and "product_id" in columns:
            row("orphan_product", gxe.ExpectColumnValuesToBeInSet, column=KNOWN_PRODUCT, value_set=[True])
        if ctx.known_customers is not None and "customer_id" in columns:
            row("orphan_customer", gxe.ExpectColumnValuesToBeInSet, column=KNOWN_CUSTOMER, value_set=[True])

    # Blocking rules: judged on the whole day (on each day, when several are validated together).
    if ctx.several_days:
        return rules + _several_days_blocking_rules(spec, ctx, row_count)
    blocking("duplicate_keys", gxe.ExpectColumnValuesToBeUnique, column=TABLE_KEY)
    if not spec.may_be_empty and not ctx.closed_day:
        blocking("empty_day", gxe.ExpectTableRowCountToBeBetween, min_value=1)
    trailing = ctx.trailing
    enough_history = trailing is not None and len(trailing.row_counts) >= ctx.min_trailing_days
    if enough_history and not ctx.closed_day and not spec.may_be_empty and trailing is not None:
        blocking(
            "volume_anomaly",
            gxe.ExpectTableRowCountToBeBetween,
            min_value=int(min(trailing.row_counts) / ctx.volume_factor),
            max_value=int(max(trailing.row_counts) * ctx.volume_factor) + 1,
        )
    if spec.time_column and row_count > 0:
        blocking("stale_data", gxe.ExpectColumnMaxToBeBetween, column=SECONDS, min_value=0)
        if enough_history and trailing is not None and trailing.last_seconds and not spec.may_be_empty:
            typical_end = sorted(trailing.last_seconds)[len(trailing.last_seconds) // 2]
            blocking(
                "truncated_day",
                gxe.ExpectColumnMaxToBeBetween,
                column=SECONDS,
                min_value=max(0.0, typical_end - ctx.truncation_hours * 3600),
            )
    return rules


def _several_days_blocking_rules(spec: TableSpec, ctx: RuleContext, row_count: int) -> list[Rule]:
    """The day-level rules over a frame of several days: the same verdicts, per day.

    Keys are unique within each day, every open day has rows, and each day has a row inside it.
    Volume and truncation compare a day with the ones before it in a live feed: not judged here.
    """
    import great_expectations.expectations as gxe

    from include.preference.validation.casting import ROW_DAY

    if ctx.trailing is not None:
        raise ValueError("trailing statistics judge one day of a live feed; validate that day alone")
    rules = [_blocking("duplicate_keys", gxe.ExpectColumnValuesToBeUnique, column=TABLE_KEY)]
    open_days = sorted(d.isoformat() for d in ctx.days if d not in ctx.closed_days)
    if not spec.may_be_empty and open_days:
        rules.append(
            _blocking("empty_day", gxe.ExpectColumnDistinctValuesToContainSet, column=ROW_DAY, value_set=open_days)
        )
    if spec.time_column and row_count > 0:
        rules.append(_blocking("stale_data", gxe.ExpectColumnMinToBeBetween, column=DAY_LAST_SECONDS, min_value=0))
    return rules


def rule_catalogue() -> dict[str, str]:
    """Every rule name with what it means (for reports and the README)."""
    return {
        "missing_columns": "blocking: a required column is absent (or renamed)",
        "wrong_type": "blocking: most values of a column cannot be read as its type",
        "duplicate_keys": "blocking: two rows share the table's key",
        "empty_day": "blocking: no rows for a day that should have some",
        "volume_anomaly": "blocking: row count far outside the trailing days' range",
        "stale_data": "blocking: every row is older than the logical day",
        "truncated_day": "blocking: the day's data stops hours before it usually does",
        "malformed_line": "row: a line with more fields than the file's header (an unquoted comma?); "
        "kept cut to the header's fields, what was beyond it in _malformed",
        "duplicate_line": "row: an exact repeat of an earlier line of the file (the first copy is kept)",
        "conflicting_duplicate": "row: one event on several lines that disagree (every copy quarantined)",
        "unparseable_timestamp": "row: a time that cannot be read",
        "future_timestamp": "row: a time more than a day after the moment it was validated",
        "unparseable_date": "row: a date that cannot be read",
        "unparseable_number": "row: a number that cannot be read or does not fit its type",
        "unparseable_boolean": "row: a flag that is not true/false",
        "bad_encoding": "row: text with undecodable bytes or control characters",
        "invalid_id": "row: an id with markup, quotes or backslashes (ids are trimmed, textual nulls are nulls)",
        "field_too_long": "row: an id over 128 characters or a text over 10,000",
        "missing_required": "row: a required value is empty",
        "unknown_event_type": f"row: event_type not one of {', '.join(EVENT_TYPES)}",
        "outside_logical_day": "row: timestamp outside the logical day (UTC)",
        "missing_product": "row: a non-search event without a product",
        "cancellation": "row: a cancelled order line",
        "non_positive_price": "row: price zero or negative",
        "non_positive_quantity": "row: quantity zero or negative",
        "implausible_value": "row: a quantity or price above its plausible bound (a multiple of the trailing "
        "days' 99.9th percentile, at most the hard bound in settings)",
        "rating_out_of_range": f"row: rating outside {RATING_RANGE[0]}..{RATING_RANGE[1]}",
        "non_product_code": "row: a service or bookkeeping code (postage, fees...), not a product",
        "orphan_product": "row: product not in the day's validated catalogue",
        "orphan_customer": "row: customer not in the day's validated customers",
    }


VALIDATION_ORDER = ("products", "customers", "events", "orders", "reviews")
assert set(VALIDATION_ORDER) == set(TABLES)
