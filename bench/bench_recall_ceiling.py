"""How far above buy-again can a ranker of a customer's candidates get on an invoice file?

    .venv/bin/python bench/bench_recall_ceiling.py [--input ../shared/data/online_retail_dev.csv.gz]
        [--cutoff 2011-09-09] [--horizon-days 90] [--k 10] [--repeats 2]

The split, evaluated customers, truth and candidates are the evaluate protocol's: the pipeline's
importer and validation (``stage_validated``, ``purchases_of``); candidates are each customer's own
past products plus the protocol's ``popular_candidates`` most bought products of the last 30 days.
Prints recall@K, and its ratio to buy-again's, for:

* ``buy_again``: the protocol's baseline;
* ``oracle``: the candidates in the best possible order (the truth first): no ranker of these
  candidates can do better;
* ``gbdt_past``: gradient-boosted trees (scikit-learn) over purchase-history features, trained on
  the protocol's training anchors (the horizons before the cutoff), as a model in the pipeline is;
* ``gbdt_in_window``: the same trees cross-fitted inside the evaluation window itself: trained on
  half of the evaluated customers' window purchases, scored on the other half, then swapped
  (``--repeats`` random halvings, averaged). It learns from the very season it is scored on, which
  no model trained on the past can, so it is the practical ceiling of these features.

Features per (customer, product): distinct purchase days, lines, days since the last and the first
purchase of it, the product's distinct buyers over 7/14/30/90/365 days and age, the customer's
distinct purchase days, recency, tenure and distinct products, and a co-purchase (item-kNN) score.
The goal printed beside them is the evaluate target: the model at least 1.25x the best baseline.
"""

from __future__ import annotations

import datetime as dt
import tempfile
import time
from pathlib import Path

import harness
import numpy as np
import pandas as pd
from lake import running_lake

from include.preference.evaluation import baselines
from include.preference.evaluation.metrics import CUSTOMER, PRODUCT, ranking_metrics, top_k
from include.preference.evaluation.protocol import Protocol, protocol_days, purchases_of, stage_validated

TARGET_RATIO = 1.25
FEATURES = (
    "pair_days",
    "pair_lines",
    "pair_last",
    "pair_first",
    *(f"product_buyers_{w}d" for w in (7, 14, 30, 90, 365)),
    "product_age",
    "customer_days",
    "customer_recency",
    "customer_tenure",
    "customer_products",
    "pair_knn",
)
NEVER = 3650.0


def candidate_features(history: pd.DataFrame, customers: list[str], as_of: dt.date, popular: int) -> pd.DataFrame:
    """Candidates (own past products + ``popular`` most bought of 30 days) with their features."""
    import scipy.sparse as sparse

    age = (pd.Timestamp(as_of) - pd.to_datetime(history["day"])).dt.days.to_numpy()
    history = history.assign(age=age)
    own = history[history[CUSTOMER].isin(set(customers))]
    pairs = (
        own.groupby([CUSTOMER, PRODUCT])
        .agg(
            pair_days=("day", "nunique"),
            pair_lines=("day", "size"),
            pair_last=("age", "min"),
            pair_first=("age", "max"),
        )
        .reset_index()
    )
    recent = history[history["age"] < 30].groupby(PRODUCT).size().reset_index(name="lines")
    top = recent.sort_values(["lines", PRODUCT], ascending=[False, True], kind="mergesort")[PRODUCT].head(popular)
    grid = pd.MultiIndex.from_product([customers, top.tolist()], names=[CUSTOMER, PRODUCT]).to_frame(index=False)
    cand = pd.concat([pairs[[CUSTOMER, PRODUCT]], grid]).drop_duplicates().merge(pairs, how="left")
    cand = cand.fillna({"pair_days": 0.0, "pair_lines": 0.0, "pair_last": NEVER, "pair_first": NEVER})

    products = pd.DataFrame(index=pd.Index(sorted(history[PRODUCT].unique()), name=PRODUCT))
    for window in (7, 14, 30, 90, 365):
        products[f"product_buyers_{window}d"] = history[history["age"] < window].groupby(PRODUCT)[CUSTOMER].nunique()
    products["product_age"] = history.groupby(PRODUCT)["age"].max()
    cand = cand.merge(products.fillna(0.0).reset_index(), on=PRODUCT, how="left")
    people = (
        own.groupby(CUSTOMER)
        .agg(
            customer_days=("day", "nunique"),
            customer_recency=("age", "min"),
            customer_tenure=("age", "max"),
            customer_products=(PRODUCT, "nunique"),
        )
        .reset_index()
    )
    cand = cand.merge(people, on=CUSTOMER, how="left")

    # Co-purchase: cosine similarity of products over their buyers, summed over the customer's products.
    bought = history[[CUSTOMER, PRODUCT]].drop_duplicates()
    rows, cols = pd.Index(sorted(bought[CUSTOMER].unique())), pd.Index(sorted(bought[PRODUCT].unique()))
    matrix = sparse.csr_matrix(
        (np.ones(len(bought)), (rows.get_indexer(bought[CUSTOMER]), cols.get_indexer(bought[PRODUCT]))),
        shape=(len(rows), len(cols)),
    )
    scale = sparse.diags(1.0 / (np.sqrt(np.asarray(matrix.sum(axis=0))).ravel() + 1e-9))
    similar = (scale @ (matrix.T @ matrix) @ scale).tocsr()
    similar.setdiag(0.0)
    scores = (matrix @ similar).tocsr()
    r, c = rows.get_indexer(cand[CUSTOMER]), cols.get_indexer(cand[PRODUCT])
    known = (r >= 0) & (c >= 0)
    knn = np.zeros(len(cand))
    knn[known] = np.asarray(scores[r[known], c[known]]).ravel()
    cand["pair_knn"] = knn / np.maximum(cand["customer_products"].fillna(1.0).to_numpy(), 1.0)
    return cand.fillna(0.0)


def labelled(purchases: pd.DataFrame, as_of: dt.date, horizon: int, popular: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Candidates as of ``as_of`` for the customers evaluated there, labelled by the horizon after it."""
    days = pd.to_datetime(purchases["day"]).dt.date
    history = purchases[days <= as_of]
    window = purchases[(days > as_of) & (days <= as_of + dt.timedelta(days=horizon))]
    customers = sorted(set(history[CUSTOMER]) & set(window[CUSTOMER]))
    truth = window[window[CUSTOMER].isin(set(customers))][[CUSTOMER, PRODUCT]].drop_duplicates()
    cand = candidate_features(history, customers, as_of, popular)
    cand = cand.merge(truth.assign(label=1.0), on=[CUSTOMER, PRODUCT], how="left").fillna({"label": 0.0})
    return cand, truth


def trees(seed: int):  # noqa: ANN201 - scikit-learn estimator
    from sklearn.ensemble import HistGradientBoostingClassifier

    return HistGradientBoostingClassifier(
        max_iter=200, learning_rate=0.05, max_leaf_nodes=15, min_samples_leaf=50, random_state=seed
    )


def recall_of(scored: pd.DataFrame, truth: pd.DataFrame, k: int) -> float:
    return ranking_metrics(top_k(scored, k), truth, k)["recall_at_k"]


def main() -> None:
    from include.preference.storage.spark_lake import spark_lake

    parser = harness.parser(__doc__)
    default_input = Path(__file__).resolve().parents[2] / "shared" / "data" / "online_retail_dev.csv.gz"
    parser.add_argument("--input", type=Path, default=default_input)
    parser.add_argument("--source", default="online_retail")
    parser.add_argument("--cutoff", type=dt.date.fromisoformat, default=dt.date(2011, 9, 9))
    parser.add_argument("--horizon-days", type=int, default=90)
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--training-anchors", type=int, default=Protocol.training_anchors)
    parser.add_argument("--anchor-step-days", type=int, default=Protocol.anchor_step_days)
    parser.add_argument("--processes", type=int, default=None, help="validation processes (default: one per core)")
    args = harness.pick(
        parser.parse_args(),
        cutoff=dt.date(2010, 12, 14),
        horizon_days=5,
        repeats=1,
        training_anchors=1,
        anchor_step_days=7,
        processes=1,
    )
    protocol = Protocol(
        args.source,
        str(args.input),
        args.cutoff,
        args.horizon_days,
        args.k,
        training_anchors=args.training_anchors,
        anchor_step_days=args.anchor_step_days,
    )

    started = time.perf_counter()
    path = Path(args.input)
    days = protocol_days(protocol)
    with (
        tempfile.TemporaryDirectory(prefix="bench-ceiling-") as tmp,
        running_lake(Path(tmp)) as (_, store),
        spark_lake(store, "bench-ceiling") as lake,
    ):
        stage_validated(protocol.source, path, days, lake, processes=args.processes)
        purchases = purchases_of(lake, days)
    print(f"validated purchase lines: {len(purchases):,} ({time.perf_counter() - started:.0f} s)")

    features = list(FEATURES)
    test, truth = labelled(purchases, protocol.cutoff, protocol.horizon_days, protocol.popular_candidates)
    customers = sorted(truth[CUSTOMER].unique())
    history = purchases[pd.to_datetime(purchases["day"]).dt.date <= protocol.cutoff]
    results = {
        "buy_again": recall_of(
            baselines.buy_again(history, customers, protocol.cutoff, protocol.k).assign(
                score=lambda f: -f["rank"].astype(float)
            ),
            truth,
            protocol.k,
        ),
        "oracle": recall_of(test.assign(score=test["label"]), truth, protocol.k),
    }
    train = pd.concat(
        [
            labelled(purchases, anchor, protocol.horizon_days, protocol.popular_candidates)[0]
            for anchor in protocol.anchors()
        ],
        ignore_index=True,
    )
    fitted = trees(0).fit(train[features], train["label"])
    results["gbdt_past"] = recall_of(test.assign(score=fitted.predict_proba(test[features])[:, 1]), truth, protocol.k)
    inside = []
    for repeat in range(args.repeats):
        order = np.random.default_rng(repeat).permutation(customers)
        halves = [set(order[: len(order) // 2]), set(order[len(order) // 2 :])]
        score = np.zeros(len(test))
        for held in halves:
            mask = test[CUSTOMER].isin(held).to_numpy()
            model = trees(repeat).fit(test.loc[~mask, features], test.loc[~mask, "label"])
            score[mask] = model.predict_proba(test.loc[mask, features])[:, 1]
        inside.append(recall_of(test.assign(score=score), truth, protocol.k))
    results["gbdt_in_window"] = float(np.mean(inside))

    print(
        f"{len(customers)} evaluated customers, {len(test):,} candidates "
        f"({len(test) / len(customers):.0f} per customer), cutoff {protocol.cutoff}, "
        f"horizon {protocol.horizon_days} days"
    )
    base = results["buy_again"]
    print(f"{'ranking':<16} recall@{protocol.k}  / buy-again")
    for name, value in results.items():
        print(f"{name:<16} {value:>9.4f}  {value / base:>9.2f}x")
    print(f"in-window repeats: {', '.join(f'{v:.4f}' for v in inside)}")
    print(
        f"target: {TARGET_RATIO:.2f}x buy-again = {TARGET_RATIO * base:.4f}; "
        f"the in-window ceiling reaches {results['gbdt_in_window'] / base:.2f}x "
        f"({time.perf_counter() - started:.0f} s)"
    )
    ratios = {f"{name} / buy_again": value / base for name, value in results.items() if name != "buy_again"}
    harness.record(
        "bench_recall_ceiling",
        args,
        title=f"recall@{protocol.k} on {args.input.name} above buy-again: gradient-boosted trees over purchase-history "
        "features trained on past horizons; the same cross-fitted inside the evaluation window; the candidates in "
        "the truth's order (the ceiling of any ranker of them)",
        result=", ".join(f"{ratios[f'{name} / buy_again']:.2f}x" for name in ("gbdt_past", "gbdt_in_window", "oracle"))
        + f" buy-again ({', '.join(f'{results[n]:.3f}' for n in ('gbdt_past', 'gbdt_in_window', 'oracle'))} vs "
        f"{base:.3f}; {len(customers)} customers)",
        ratios=ratios,
        goal=f"gbdt_past at least {TARGET_RATIO}x (the evaluate target)",
        met=ratios["gbdt_past / buy_again"] >= TARGET_RATIO,
        seconds={"total": time.perf_counter() - started},
        sizes={"customers": len(customers), "candidates": len(test)},
    )


if __name__ == "__main__":
    main()
