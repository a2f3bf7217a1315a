"""Baselines the model must beat, all fitted on purchases up to the cutoff only.

* popularity: the products bought by the most distinct customers in the last ``window_days``
  before the cutoff; the same list for everyone (what a cold-start customer gets);
* buy-again: the customer's own products, most often bought first (distinct purchase days, then
  the most recent), the rest of the list filled with popular products the customer has not bought;
* ALS: implicit-feedback matrix factorisation (Spark MLlib) on purchase counts.

Purchases: one row per purchased line with ``customer_id``, ``product_id`` and ``day`` (a date).
Each returns (customer_id, product_id, rank) for the requested customers.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from include.preference.evaluation.metrics import CUSTOMER, PRODUCT, RANK

if TYPE_CHECKING:
    from pyspark.sql import SparkSession

DAY = "day"


def _before(purchases: pd.DataFrame, cutoff: dt.date) -> pd.DataFrame:
    days = pd.to_datetime(purchases[DAY]).dt.date
    return purchases[days <= cutoff]


def popular_products(purchases: pd.DataFrame, cutoff: dt.date, k: int, window_days: int = 90) -> list[str]:
    """The ``k`` products with the most distinct buyers in (cutoff - window, cutoff]."""
    history = _before(purchases, cutoff)
    recent = history[pd.to_datetime(history[DAY]).dt.date > cutoff - dt.timedelta(days=window_days)]
    if recent.empty:
        recent = history
    counts = recent.groupby(PRODUCT)[CUSTOMER].nunique().reset_index(name="buyers")
    counts = counts.sort_values(["buyers", PRODUCT], ascending=[False, True], kind="mergesort")
    return counts[PRODUCT].head(k).tolist()


def popularity(
    purchases: pd.DataFrame, customers: Sequence[str], cutoff: dt.date, k: int, window_days: int = 90
) -> pd.DataFrame:
    top = popular_products(purchases, cutoff, k, window_days)
    return pd.DataFrame(
        {
            CUSTOMER: np.repeat(np.asarray(customers, dtype=object), len(top)),
            PRODUCT: np.tile(np.asarray(top, dtype=object), len(customers)),
            RANK: np.tile(np.arange(1, len(top) + 1), len(customers)),
        }
    )


def buy_again(
    purchases: pd.DataFrame, customers: Sequence[str], cutoff: dt.date, k: int, window_days: int = 90
) -> pd.DataFrame:
    history = _before(purchases, cutoff)
    history = history[history[CUSTOMER].isin(set(customers))]
    own = (
        history.assign(_day=pd.to_datetime(history[DAY]))
        .groupby([CUSTOMER, PRODUCT])
        .agg(days=("_day", "nunique"), last=("_day", "max"))
        .reset_index()
        .sort_values([CUSTOMER, "days", "last", PRODUCT], ascending=[True, False, False, True], kind="mergesort")
    )
    own[RANK] = own.groupby(CUSTOMER).cumcount() + 1
    own = own[own[RANK] <= k][[CUSTOMER, PRODUCT, RANK]]
    # Fill with popular products the customer has not bought (2k candidates cover any overlap).
    fill = popularity(purchases, customers, cutoff, 2 * k, window_days)
    fill = fill.merge(own[[CUSTOMER, PRODUCT]], on=[CUSTOMER, PRODUCT], how="left", indicator=True)
    fill = fill[fill["_merge"] == "left_only"].drop(columns="_merge")
    combined = pd.concat([own.assign(_source=0), fill.assign(_source=1)], ignore_index=True)
    combined = combined.sort_values([CUSTOMER, "_source", RANK], kind="mergesort")
    combined[RANK] = combined.groupby(CUSTOMER).cumcount() + 1
    return combined[combined[RANK] <= k][[CUSTOMER, PRODUCT, RANK]].reset_index(drop=True)


@dataclass(frozen=True)
class AlsSettings:
    rank: int = 32
    reg_param: float = 0.1
    alpha: float = 10.0
    max_iter: int = 10
    seed: int = 7


def als(
    spark: "SparkSession",
    purchases: pd.DataFrame,
    customers: Sequence[str],
    cutoff: dt.date,
    k: int,
    settings: AlsSettings | None = None,
) -> pd.DataFrame:
    """Implicit ALS on purchase counts up to the cutoff; top ``k`` per requested customer.

    Customers ALS never saw (no purchase before the cutoff) get no list.
    """
    from pyspark.ml.recommendation import ALS

    settings = settings or AlsSettings()
    history = _before(purchases, cutoff)
    counts = history.groupby([CUSTOMER, PRODUCT]).size().reset_index(name="purchases")
    customer_codes = pd.Index(sorted(counts[CUSTOMER].unique()))
    product_codes = pd.Index(sorted(counts[PRODUCT].unique()))
    ratings = pd.DataFrame(
        {
            "user": customer_codes.get_indexer(counts[CUSTOMER]).astype(np.int32),
            "item": product_codes.get_indexer(counts[PRODUCT]).astype(np.int32),
            "rating": counts["purchases"].astype(np.float32),
        }
    )
    model = ALS(
        rank=settings.rank,
        regParam=settings.reg_param,
        alpha=settings.alpha,
        maxIter=settings.max_iter,
        implicitPrefs=True,
        seed=settings.seed,
        userCol="user",
        itemCol="item",
        ratingCol="rating",
        coldStartStrategy="drop",
    ).fit(spark.createDataFrame(ratings))
    known = customer_codes.get_indexer(pd.Index(customers))
    wanted = spark.createDataFrame(pd.DataFrame({"user": known[known >= 0].astype(np.int32)}))
    rows: pd.DataFrame = model.recommendForUserSubset(wanted, k).toPandas()
    if rows.empty:
        return pd.DataFrame(columns=[CUSTOMER, PRODUCT, RANK])
    exploded = rows.explode("recommendations").dropna()
    items = exploded["recommendations"].map(lambda r: int(r["item"]))
    scores = exploded["recommendations"].map(lambda r: float(r["rating"]))
    out = pd.DataFrame(
        {
            CUSTOMER: customer_codes[exploded["user"].to_numpy()],
            PRODUCT: product_codes[items.to_numpy()],
            "score": scores.to_numpy(),
        }
    )
    out = out.sort_values([CUSTOMER, "score", PRODUCT], ascending=[True, False, True], kind="mergesort")
    out[RANK] = out.groupby(CUSTOMER).cumcount() + 1
    return out[[CUSTOMER, PRODUCT, RANK]].reset_index(drop=True)
