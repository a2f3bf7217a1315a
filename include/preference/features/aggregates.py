"""Point-in-time aggregates in Spark: daily sums, and state folded incrementally or in full.

A day's run computes that day's **daily aggregates** from the day's validated rows only, then folds
them into the **state** (window sums and all-time sums per entity) of the day before:

    window sum(D) = window sum(D-1) + daily(D) - daily(D - W)        for each window W
    all-time sum(D) = all-time sum(D-1) + daily(D)

so a day's cost does not grow with history. Sums are integers (counts, money in cents), hence the
incremental state equals the full recompute over all dailies exactly. Both paths go through one
function, :func:`fold`: the full path feeds it every daily up to D, the incremental path feeds it
the previous state, today's daily and the expiring dailies. Nothing dated after D is ever read.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from include.preference.features.spec import AFFINITY_WINDOW, UNKNOWN, WINDOWS

if TYPE_CHECKING:
    from pyspark.sql import Column, DataFrame

DAY = "day"


@dataclass(frozen=True)
class Aggregate:
    """One aggregated entity: its keys, the daily measures and how the state keeps them.

    Attributes:
        name: table name (``daily_<name>`` and ``state_<name>`` in the lake).
        keys: key columns.
        measures: integer daily sums.
        windows: window lengths in days kept for every measure.
        all_time: measures also kept as all-time sums.
        last_days: state column -> measure that must be positive on that day (None: any row counts).
        first_day: keep the first day the key appeared.
        first_days: state column -> measure that must be positive on that day (the earliest such day).
        drop_empty: drop keys whose window sums are all zero (state that only serves windows).
    """

    name: str
    keys: tuple[str, ...]
    measures: tuple[str, ...]
    windows: tuple[int, ...] = ()
    all_time: tuple[str, ...] = ()
    last_days: Mapping[str, str | None] = field(default_factory=dict)
    first_day: bool = False
    first_days: Mapping[str, str] = field(default_factory=dict)
    drop_empty: bool = False

    @property
    def window_columns(self) -> list[str]:
        return [f"{m}_{w}d" for m in self.measures for w in self.windows]

    @property
    def all_time_columns(self) -> list[str]:
        return [f"{m}_all" for m in self.all_time]

    @property
    def state_columns(self) -> list[str]:
        days = [*self.last_days, *(["first_day"] if self.first_day else []), *self.first_days]
        return [*self.keys, *self.window_columns, *self.all_time_columns, *days]


CUSTOMERS = Aggregate(
    name="customers",
    keys=("customer_id",),
    measures=(
        "views",
        "searches",
        "carts",
        "purchases",
        "sessions",
        "orders",
        "units",
        "revenue_cents",
        "view_price_cents",
        "priced_views",
    ),
    windows=WINDOWS,
    all_time=("orders", "units", "revenue_cents"),
    last_days={"last_active_day": None, "last_order_day": "orders"},
    first_day=True,
)
PRODUCTS = Aggregate(
    name="products",
    keys=("product_id",),
    measures=("views", "carts", "purchases", "units"),
    windows=WINDOWS,
)
PAIRS = Aggregate(
    name="pairs",
    keys=("customer_id", "product_id"),
    # order_days: 1 on a day the customer ordered the product (its all-time sum: distinct order days).
    measures=("views", "carts", "purchases", "units", "orders", "order_days"),
    all_time=("views", "carts", "purchases", "units", "orders", "order_days"),
    last_days={"last_interaction_day": None, "last_order_day": "orders"},
    first_days={"first_order_day": "orders"},
)
CUSTOMER_CATEGORIES = Aggregate(
    name="customer_categories",
    keys=("customer_id", "category"),
    measures=("interactions",),
    windows=(AFFINITY_WINDOW,),
    drop_empty=True,
)
AGGREGATES: tuple[Aggregate, ...] = (CUSTOMERS, PRODUCTS, PAIRS, CUSTOMER_CATEGORIES)
BY_NAME = {a.name: a for a in AGGREGATES}


def _cents(column: "Column") -> "Column":
    from pyspark.sql import functions as F

    return F.round(column * F.lit(100)).cast("long")


def category_key(path: "Column") -> "Column":
    """A category path as a key: trimmed, lower case, ``unknown`` when empty."""
    from pyspark.sql import functions as F

    key = F.lower(F.trim(F.coalesce(path, F.lit(""))))
    return F.when(key == "", F.lit(UNKNOWN)).otherwise(key)


def top_category(path: "Column") -> "Column":
    """First level of a ``/``-joined category path, ``unknown`` when empty."""
    from pyspark.sql import functions as F

    first = F.split(F.coalesce(path, F.lit("")), "/").getItem(0)
    return F.when(F.trim(first) == "", F.lit(UNKNOWN)).otherwise(F.lower(F.trim(first)))


def daily_aggregates(events: "DataFrame", orders: "DataFrame", products: "DataFrame") -> dict[str, "DataFrame"]:
    """The daily aggregates of validated rows, keyed by entity and ``day`` (UTC date).

    Args:
        events: validated events of one or more days.
        orders: validated order lines of the same days (no cancellations: validation quarantines them).
        products: the catalogue snapshot per day, with a ``day`` column.

    Returns:
        One DataFrame per aggregate name, each with the aggregate's keys, ``day`` and its measures.
    """
    from pyspark.sql import functions as F

    ev = events.withColumn(DAY, F.to_date("event_time"))
    od = orders.withColumn(DAY, F.to_date("order_time")).withColumn(
        "revenue_cents", _cents(F.col("unit_price")) * F.col("quantity").cast("long")
    )

    def count_of(kind: str) -> "Column":
        return F.count(F.when(F.col("event_type") == kind, True)).cast("long")

    customer_events = ev.groupBy("customer_id", DAY).agg(
        count_of("view").alias("views"),
        count_of("search").alias("searches"),
        count_of("add_to_cart").alias("carts"),
        count_of("purchase").alias("purchases"),
        F.countDistinct("session_id").cast("long").alias("sessions"),
        F.coalesce(
            F.sum(F.when((F.col("event_type") == "view") & F.col("price").isNotNull(), _cents(F.col("price")))),
            F.lit(0),
        )
        .cast("long")
        .alias("view_price_cents"),
        F.count(F.when((F.col("event_type") == "view") & F.col("price").isNotNull(), True))
        .cast("long")
        .alias("priced_views"),
    )
    customer_orders = od.groupBy("customer_id", DAY).agg(
        F.countDistinct("order_id").cast("long").alias("orders"),
        F.sum(F.col("quantity").cast("long")).alias("units"),
        F.sum("revenue_cents").cast("long").alias("revenue_cents"),
    )
    customers = _zero_filled(customer_events.join(customer_orders, ["customer_id", DAY], "full"), CUSTOMERS)

    product_events = (
        ev.where(F.col("product_id").isNotNull())
        .groupBy("product_id", DAY)
        .agg(
            count_of("view").alias("views"),
            count_of("add_to_cart").alias("carts"),
            count_of("purchase").alias("purchases"),
        )
    )
    product_orders = od.groupBy("product_id", DAY).agg(F.sum(F.col("quantity").cast("long")).alias("units"))
    products_daily = _zero_filled(product_events.join(product_orders, ["product_id", DAY], "full"), PRODUCTS)

    pair_events = (
        ev.where(F.col("product_id").isNotNull())
        .groupBy("customer_id", "product_id", DAY)
        .agg(
            count_of("view").alias("views"),
            count_of("add_to_cart").alias("carts"),
            count_of("purchase").alias("purchases"),
        )
    )
    pair_orders = od.groupBy("customer_id", "product_id", DAY).agg(
        F.sum(F.col("quantity").cast("long")).alias("units"), F.countDistinct("order_id").cast("long").alias("orders")
    )
    pairs = _zero_filled(
        pair_events.join(pair_orders, ["customer_id", "product_id", DAY], "full").withColumn(
            "order_days", F.when(F.col("orders") > 0, F.lit(1)).otherwise(F.lit(0))
        ),
        PAIRS,
    )

    catalogue = products.select("product_id", DAY, category_key(F.col("category_path")).alias("category"))
    categories = (
        ev.where(F.col("product_id").isNotNull() & (F.col("event_type") != "search"))
        .join(catalogue, ["product_id", DAY], "left")
        .withColumn("category", F.coalesce("category", F.lit(UNKNOWN)))
        .groupBy("customer_id", "category", DAY)
        .agg(F.count(F.lit(1)).cast("long").alias("interactions"))
    )
    return {
        CUSTOMERS.name: customers,
        PRODUCTS.name: products_daily,
        PAIRS.name: pairs,
        CUSTOMER_CATEGORIES.name: categories,
    }


def _zero_filled(frame: "DataFrame", aggregate: Aggregate) -> "DataFrame":
    from pyspark.sql import functions as F

    return frame.select(
        *aggregate.keys, DAY, *(F.coalesce(F.col(m), F.lit(0)).cast("long").alias(m) for m in aggregate.measures)
    )


def _daily_as_delta(
    daily: "DataFrame", aggregate: Aggregate, as_of: dt.date, sign: int = 1, only_window: int | None = None
) -> "DataFrame":
    """Daily rows turned into state-shaped contributions for :func:`fold` as of ``as_of``.

    With ``sign=1`` a row adds to each window that contains its day and to the all-time sums;
    ``sign=-1, only_window=W`` takes an expiring day out of window W only.
    """
    from pyspark.sql import functions as F

    columns: list[Column] = [F.col(k) for k in aggregate.keys]
    for measure in aggregate.measures:
        for window in aggregate.windows:
            if only_window is not None:
                value = F.col(measure) * F.lit(sign) if window == only_window else F.lit(0).cast("long")
            else:
                inside = F.col(DAY) > F.lit(as_of - dt.timedelta(days=window))
                value = F.when(inside, F.col(measure)).otherwise(F.lit(0)).cast("long")
            columns.append(value.alias(f"{measure}_{window}d"))
    for measure in aggregate.all_time:
        value = F.col(measure) if only_window is None else F.lit(0).cast("long")
        columns.append(value.cast("long").alias(f"{measure}_all"))
    for name, condition in aggregate.last_days.items():
        if only_window is not None:
            columns.append(F.lit(None).cast("date").alias(name))
        else:
            active = F.lit(True) if condition is None else F.col(condition) > 0
            columns.append(F.when(active, F.col(DAY)).cast("date").alias(name))
    if aggregate.first_day:
        first = F.lit(None).cast("date") if only_window is not None else F.col(DAY).cast("date")
        columns.append(first.alias("first_day"))
    for name, measure in aggregate.first_days.items():
        if only_window is not None:
            columns.append(F.lit(None).cast("date").alias(name))
        else:
            columns.append(F.when(F.col(measure) > 0, F.col(DAY)).cast("date").alias(name))
    return daily.select(*columns)


def union_all(frames: Sequence["DataFrame"]) -> "DataFrame":
    """Rows of every frame, columns matched by name."""
    from functools import reduce

    return reduce(lambda a, b: a.unionByName(b), frames)


def fold(aggregate: Aggregate, contributions: Sequence["DataFrame"]) -> "DataFrame":
    """Combine state-shaped rows by key: sums add, last days take the latest, first days the earliest."""
    from pyspark.sql import functions as F

    union = union_all(contributions)
    aggregations = [F.sum(c).cast("long").alias(c) for c in (*aggregate.window_columns, *aggregate.all_time_columns)]
    aggregations += [F.max(c).alias(c) for c in aggregate.last_days]
    if aggregate.first_day:
        aggregations.append(F.min("first_day").alias("first_day"))
    aggregations += [F.min(c).alias(c) for c in aggregate.first_days]
    state = union.groupBy(*aggregate.keys).agg(*aggregations)
    if aggregate.drop_empty:
        state = state.where(" OR ".join(f"`{c}` != 0" for c in aggregate.window_columns))
    return state.select(*aggregate.state_columns)


def fold_full(aggregate: Aggregate, dailies: "DataFrame", as_of: dt.date) -> "DataFrame":
    """The state as of ``as_of`` from every daily row up to and including that day."""
    from pyspark.sql import functions as F

    history = dailies.where(F.col(DAY) <= F.lit(as_of))
    return fold(aggregate, [_daily_as_delta(history, aggregate, as_of)])


def fold_incremental(
    aggregate: Aggregate,
    previous: "DataFrame",
    today: "DataFrame",
    expiring: Mapping[int, "DataFrame | None"],
    as_of: dt.date,
) -> "DataFrame":
    """The state as of ``as_of`` from the state of the day before, today's daily and expiring days.

    Args:
        previous: the state as of ``as_of - 1``.
        today: the daily aggregate of ``as_of``.
        expiring: window length -> daily aggregate of ``as_of - window`` (None when that day has none).
    """
    contributions = [previous.select(*aggregate.state_columns), _daily_as_delta(today, aggregate, as_of)]
    for window, daily in sorted(expiring.items()):
        if daily is not None:
            contributions.append(_daily_as_delta(daily, aggregate, as_of, sign=-1, only_window=window))
    return fold(aggregate, contributions)
