"""Baselines the model must beat, all fitted on purchases up to the cutoff only.

* popularity: the products bought by the most distinct customers in the last ``window_days``
  before the cutoff; the same list for everyone (what a cold-start customer gets);
* buy-again: the customer's own products, most often bought first (distinct purchase days, then
  the most recent), the rest of the list filled with popular products the customer has not bought;
* ALS: implicit-feedback matrix factorisation (Spark MLlib) on purchase counts;
* buy-again, decayed: the customer's own products by time-decayed purchase days (a half-life);
* TIFU-KNN (Hu et al., SIGIR 2020): each customer's baskets (a day's purchases) as time-decayed
  item-frequency vectors (decayed within groups of consecutive baskets and across the groups),
  blended with the mean vector of the nearest customers.

The last two choose their hyper-parameters on an earlier split (the horizon before the cutoff,
judged on the purchases up to the cutoff), never on the evaluated window: ``tuned_on_earlier_split``.

Purchases: one row per purchased line with ``customer_id``, ``product_id`` and ``day`` (a date).
Each returns (customer_id, product_id, rank) for the requested customers.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace
from itertools import product as grid_product
from typing import TYPE_CHECKING, Any

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
    return _with_fill(own, popularity(purchases, customers, cutoff, 2 * k, window_days), k)


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


def _filled(own: pd.DataFrame, fill: pd.DataFrame, k: int) -> pd.DataFrame:
    """``own`` (customer, product, score) ranked by score, then the products of ``fill`` (the
    popularity lists of 2k) not in it, ``k`` each."""
    own = own.sort_values([CUSTOMER, "score", PRODUCT], ascending=[True, False, True], kind="mergesort")
    own = own.assign(**{RANK: own.groupby(CUSTOMER).cumcount() + 1})
    return _with_fill(own[own[RANK] <= k][[CUSTOMER, PRODUCT, RANK]], fill, k)


def _with_fill(own: pd.DataFrame, fill: pd.DataFrame, k: int) -> pd.DataFrame:
    """Ranked ``own`` lists, then the products of ``fill`` not in them, ``k`` per customer."""
    fill = fill.merge(own[[CUSTOMER, PRODUCT]], on=[CUSTOMER, PRODUCT], how="left", indicator=True)
    fill = fill[fill["_merge"] == "left_only"].drop(columns="_merge")
    combined = pd.concat([own.assign(_source=0), fill.assign(_source=1)], ignore_index=True)
    combined = combined.sort_values([CUSTOMER, "_source", RANK], kind="mergesort")
    combined[RANK] = combined.groupby(CUSTOMER).cumcount() + 1
    return combined[combined[RANK] <= k][[CUSTOMER, PRODUCT, RANK]].reset_index(drop=True)


@dataclass(frozen=True)
class DecayedSettings:
    half_life_days: float = 30.0


DECAYED_GRID = {"half_life_days": (7.0, 30.0, 90.0, 365.0)}


def buy_again_decayed(
    purchases: pd.DataFrame,
    customers: Sequence[str],
    cutoff: dt.date,
    k: int,
    settings: DecayedSettings | None = None,
) -> pd.DataFrame:
    """The customer's own products by the sum over their distinct purchase days of
    ``0.5 ** (days before the cutoff / half-life)``, then popular products."""
    settings = settings or DecayedSettings()
    history = _before(purchases, cutoff)
    history = history[history[CUSTOMER].isin(set(customers))]
    days = pd.to_datetime(history[DAY])
    pairs = history.assign(_day=days).drop_duplicates([CUSTOMER, PRODUCT, "_day"])
    age = (pd.Timestamp(cutoff) - pairs["_day"]).dt.days.to_numpy(dtype=np.float64)
    pairs = pairs.assign(score=np.power(0.5, age / settings.half_life_days))
    own = pairs.groupby([CUSTOMER, PRODUCT], as_index=False)["score"].sum()
    return _filled(own, popularity(purchases, customers, cutoff, 2 * k), k)


@dataclass(frozen=True)
class TifuSettings:
    """The paper's hyper-parameters: baskets per group, within-group and across-group decay,
    neighbours, and the weight of the customer's own vector against the neighbours' mean."""

    group_size: int = 7
    within_decay: float = 0.9
    group_decay: float = 0.7
    neighbours: int = 300
    alpha: float = 0.7


TIFU_GRID = {
    "group_size": (3, 7),
    "within_decay": (0.9, 1.0),
    "group_decay": (0.7, 1.0),
    "neighbours": (20, 100, 300),
    "alpha": (0.5, 0.7, 0.9),
}


def tifu_vectors(purchases: pd.DataFrame, cutoff: dt.date, settings: TifuSettings) -> tuple[pd.Index, pd.Index, Any]:
    """Customers, products and the customers x products matrix (CSR) of time-decayed frequencies.

    A customer's baskets (the distinct products of each purchase day, in day order) are split into
    ``ceil(n / group_size)`` groups of consecutive baskets of near-equal size; basket ``j`` of a group
    of ``L`` weighs ``within_decay ** (L - 1 - j) / L``, group ``g`` of ``G`` weighs
    ``group_decay ** (G - 1 - g) / G``; a customer's vector sums its baskets' multi-hot vectors so weighted.
    """
    from scipy import sparse

    history = _before(purchases, cutoff)
    lines = history.assign(_day=pd.to_datetime(history[DAY])).drop_duplicates([CUSTOMER, PRODUCT, "_day"])
    customers = pd.Index(sorted(lines[CUSTOMER].unique()))
    products = pd.Index(sorted(lines[PRODUCT].unique()))
    if lines.empty:
        return customers, products, sparse.csr_matrix((0, 0))
    baskets = lines[[CUSTOMER, "_day"]].drop_duplicates().sort_values([CUSTOMER, "_day"], kind="mergesort")
    index = baskets.groupby(CUSTOMER).cumcount().to_numpy()
    count = baskets.groupby(CUSTOMER)["_day"].transform("size").to_numpy()
    groups = np.ceil(count / settings.group_size).astype(np.int64)
    group = index * groups // count  # consecutive blocks of near-equal size
    first = np.ceil(group * count / groups).astype(np.int64)  # the first basket index of each block
    last = np.ceil((group + 1) * count / groups).astype(np.int64)
    length = last - first
    weight = (
        np.power(settings.within_decay, length - 1 - (index - first))
        / length
        * np.power(settings.group_decay, groups - 1 - group)
        / groups
    )
    baskets = baskets.assign(_weight=weight)
    weighted = lines.merge(baskets, on=[CUSTOMER, "_day"])
    matrix = sparse.csr_matrix(
        (
            weighted["_weight"].to_numpy(dtype=np.float64),
            (customers.get_indexer(weighted[CUSTOMER]), products.get_indexer(weighted[PRODUCT])),
        ),
        shape=(len(customers), len(products)),
    )
    matrix.sum_duplicates()
    return customers, products, matrix


def _nearest(vectors: Any, rows: np.ndarray, count: int, chunk: int = 1024) -> np.ndarray:
    """For each of ``rows``, the ``count`` nearest other customers by Euclidean distance (as the
    paper's implementation), nearest first; brute force in chunks of rows."""
    total = vectors.shape[0]
    count = max(0, min(count, total - 1))
    out = np.zeros((len(rows), count), dtype=np.int64)
    if count == 0:
        return out
    norms = np.asarray(vectors.multiply(vectors).sum(axis=1)).ravel()
    for start in range(0, len(rows), chunk):
        part = rows[start : start + chunk]
        dots = (vectors[part] @ vectors.T).toarray()
        distance = norms[part, None] + norms[None, :] - 2.0 * dots
        distance[np.arange(len(part)), part] = np.inf  # not one's own neighbour
        nearest = np.argpartition(distance, count - 1, axis=1)[:, :count]
        order = np.take_along_axis(distance, nearest, axis=1).argsort(axis=1, kind="stable")
        out[start : start + len(part)] = np.take_along_axis(nearest, order, axis=1)
    return out


def _tifu_scores(vectors: Any, rows: np.ndarray, nearest: np.ndarray, neighbours: int, alpha: float) -> Any:
    """``alpha`` x own vector + (1 - alpha) x the mean of the first ``neighbours`` nearest vectors."""
    from scipy import sparse

    chosen = nearest[:, :neighbours]
    if chosen.shape[1] == 0:
        return alpha * vectors[rows]
    mean = sparse.csr_matrix(
        (
            np.full(chosen.size, 1.0 / chosen.shape[1]),
            (np.repeat(np.arange(len(rows)), chosen.shape[1]), chosen.ravel()),
        ),
        shape=(len(rows), vectors.shape[0]),
    )
    return alpha * vectors[rows] + (1.0 - alpha) * (mean @ vectors)


def _top_of(
    scores: Any, customers: pd.Index, products: pd.Index, rows: np.ndarray, k: int, chunk: int = 2048
) -> pd.DataFrame:
    """The positive scores of each row as (customer, product, score), the ``k`` highest per customer
    (ties: the smaller product id first), in numpy over dense chunks of rows."""
    parts = []
    width = min(k, scores.shape[1])
    for start in range(0, scores.shape[0] if width else 0, chunk):
        dense = scores[start : start + chunk].toarray()
        # Each row's k-th highest score; every score at or above it (ties included) is a candidate,
        # then ranked on (-score, product index) and cut at k.
        threshold = -np.partition(-dense, width - 1, axis=1)[:, width - 1 : width]
        row, column = np.nonzero((dense >= threshold) & (dense > 0))
        values = dense[row, column]
        order = np.lexsort((column, -values, row))
        row, column, values = row[order], column[order], values[order]
        keep = np.concatenate([[0], np.flatnonzero(np.diff(row)) + 1]) if len(row) else np.array([], dtype=np.int64)
        position = np.arange(len(row)) - np.repeat(keep, np.diff(np.append(keep, len(row))))
        chosen = position < width
        parts.append(
            pd.DataFrame(
                {
                    CUSTOMER: customers[rows[start + row[chosen]]],
                    PRODUCT: products[column[chosen]],
                    "score": values[chosen],
                }
            )
        )
    return pd.concat(parts, ignore_index=True) if parts else pd.DataFrame(columns=[CUSTOMER, PRODUCT, "score"])


def tifu_knn(
    purchases: pd.DataFrame,
    customers: Sequence[str],
    cutoff: dt.date,
    k: int,
    settings: TifuSettings | None = None,
) -> pd.DataFrame:
    """TIFU-KNN's top ``k`` per requested customer (every customer before the cutoff is a possible
    neighbour); customers without a purchase before the cutoff, and short lists, get popular products."""
    return _tifu_lists(purchases, customers, cutoff, k, [settings or TifuSettings()])[0]


def _tifu_lists(
    purchases: pd.DataFrame, customers: Sequence[str], cutoff: dt.date, k: int, candidates: list[TifuSettings]
) -> list[pd.DataFrame]:
    """TIFU-KNN's lists for each of ``candidates``, sharing vectors and neighbours where they can."""
    out: list[pd.DataFrame] = []
    fill = popularity(purchases, customers, cutoff, 2 * k)
    most = max(c.neighbours for c in candidates)
    built = None  # the vectors' settings now built; candidates sharing them follow one another
    for settings in candidates:
        shape = (settings.group_size, settings.within_decay, settings.group_decay)
        if shape != built:
            known, products, vectors = tifu_vectors(purchases, cutoff, settings)
            wanted = known.get_indexer(pd.Index(customers))
            rows = wanted[wanted >= 0]
            nearest = _nearest(vectors, rows, most)
            built = shape
        if len(rows):
            own = _top_of(
                _tifu_scores(vectors, rows, nearest, settings.neighbours, settings.alpha), known, products, rows, k
            )
        else:
            own = pd.DataFrame(columns=[CUSTOMER, PRODUCT, "score"])
        out.append(_filled(own, fill, k))
    return out


def tuned_on_earlier_split(
    name: str,
    purchases: pd.DataFrame,
    cutoff: dt.date,
    horizon_days: int,
    k: int,
    max_customers: int = 2000,
    seed: int = 7,
) -> dict[str, Any]:
    """The hyper-parameters of ``name`` (``tifu_knn`` or ``buy_again_decayed``) that give the best
    recall@``k`` when fitted on the purchases up to ``cutoff - horizon`` and judged on the purchases
    of the horizon that ends on ``cutoff``: only data up to ``cutoff``, never the evaluated window.

    Returns the settings, the split's dates and customers, and each candidate's recall.
    """
    from include.preference.evaluation.metrics import ranking_metrics

    history = _before(purchases, cutoff)
    split = cutoff - dt.timedelta(days=horizon_days)
    days = pd.to_datetime(history[DAY]).dt.date
    before, window = history[days <= split], history[days > split]
    judged = sorted(set(before[CUSTOMER]) & set(window[CUSTOMER]))
    if len(judged) > max_customers:  # a seeded sample keeps the search cheap on large files
        judged = sorted(
            np.random.default_rng(seed).choice(np.asarray(judged, dtype=object), max_customers, replace=False)
        )
    truth = window[window[CUSTOMER].isin(judged)][[CUSTOMER, PRODUCT]].drop_duplicates()
    if name == "tifu_knn":
        default: Any = TifuSettings()
        candidates = [
            replace(default, **dict(zip(TIFU_GRID, values, strict=True)))
            for values in grid_product(*TIFU_GRID.values())
        ]
        # Shared vectors per (group size, decays): group the candidates so each is built once.
        candidates.sort(key=lambda c: (c.group_size, c.within_decay, c.group_decay))
        lists = _tifu_lists(before, judged, split, k, candidates) if judged else []
    elif name == "buy_again_decayed":
        default = DecayedSettings()
        candidates = [DecayedSettings(half_life_days=h) for h in DECAYED_GRID["half_life_days"]]
        lists = [buy_again_decayed(before, judged, split, k, c) for c in candidates] if judged else []
    else:
        raise ValueError(f"no hyper-parameters to tune for {name!r}; expected tifu_knn or buy_again_decayed")
    if not judged:
        return {"settings": asdict(default), "split": split.isoformat(), "customers": 0, "tried": 0}
    recalls = [ranking_metrics(recs, truth, k)["recall_at_k"] for recs in lists]
    best = int(np.argmax(recalls))  # the first best: candidates are in a fixed order
    return {
        "settings": asdict(candidates[best]),
        "split": split.isoformat(),
        "customers": len(judged),
        "tried": len(candidates),
        "recall_at_k": recalls[best],
        "default_recall_at_k": recalls[candidates.index(default)] if default in candidates else None,
    }
