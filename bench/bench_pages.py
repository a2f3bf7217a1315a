"""The dashboard and a customer's page with a year of published outputs and 100,000 customers
(goal: each under 1 s).

    .venv/bin/python bench/bench_pages.py [--days 365] [--customers 100000] [--products 5000] [--repeat 7]

Against a real S3 server (SeaweedFS, started here) it publishes ``--days`` consecutive days of every
partition the two pages read, each through the storage contract (version folder, manifest last),
at the size of a shop with ``--customers`` customers: top-10 recommendations per customer, RFM
tiers, segment assignments with their summary, migration and profiles, customer profiles
(``PROFILE_DIM`` floats each), the catalogue, and the daily training, validation and RFM reports. The per-customer
tables hold the same rows every day (a day's cost on the pages is the number of days listed and the
size of the day shown, not how the days differ), so publishing a year takes minutes, not hours.

It then serves the plugin's FastAPI app in this process (Starlette's TestClient: the app's own
code, no network; authentication is Airflow's and is left out) and times ``GET /ui`` and
``GET /ui/customers/<id>`` for a different customer each time: the first (cold) request of each,
then the median of ``--repeat`` more. The ratios are the medians over the 1-second goal; the
obvious way of listing a table's days (one request per day for its manifest, what the app did
before) is timed against the one listing it makes now.
"""

from __future__ import annotations

import datetime as dt
import json
import statistics
import tempfile
import time
from pathlib import Path

import harness
import numpy as np
import pyarrow as pa
from lake import running_lake

from include.preference.profiles import PROFILE_DIM
from include.preference.storage import ObjectStore, PartitionRef, list_partitions
from include.preference.storage.partitions import MANIFEST_NAME, PartFile, parquet_bytes, publish_files

GOAL_SECONDS = 1.0
FIRST_DAY = dt.date(2026, 1, 1)
K = 10
CLUSTERS = 12
TIERS = ("low", "mid", "high")
SOURCES = ("buy_again", "embedding_neighbours", "category_popular", "popular")


def customer_ids(n: int) -> list[str]:
    return [f"C{i:07d}" for i in range(n)]


def product_ids(n: int) -> list[str]:
    return [f"P{i:06d}" for i in range(n)]


def per_customer_files(customers: int, products: int, seed: int = 7) -> dict[tuple[str, str], list[PartFile]]:
    """The per-customer and catalogue partitions of one day, as the jobs publish them."""
    rng = np.random.default_rng(seed)
    ids, items = customer_ids(customers), product_ids(products)
    files: dict[tuple[str, str], list[PartFile]] = {}

    picks = rng.integers(0, products, size=(customers, K))
    recommendations = pa.table(
        {
            "customer_id": pa.array(np.repeat(ids, K), pa.string()),
            "product_id": pa.array([items[i] for i in picks.ravel()], pa.string()),
            "rank": pa.array(np.tile(np.arange(1, K + 1), customers), pa.int32()),
            "propensity": pa.array(np.sort(rng.random((customers, K)), axis=1)[:, ::-1].ravel(), pa.float32()),
            "source": pa.array(rng.choice(SOURCES, size=customers * K), pa.string()),
            "model_version": pa.array(["3"] * (customers * K), pa.string()),
        }
    )
    files[("scores", "recommendations")] = [
        PartFile("part-00000.parquet", parquet_bytes(recommendations), recommendations.num_rows)
    ]

    scores = rng.integers(0, 2, size=(customers, 3)).astype(np.float64)
    rfm = pa.table(
        {
            "customer_id": pa.array(ids, pa.string()),
            "recency": rng.integers(0, 365, customers).astype(np.float64),
            "frequency": rng.integers(1, 40, customers).astype(np.float64),
            "monetary": rng.gamma(2.0, 80.0, customers),
            "recency_score": scores[:, 0],
            "frequency_score": scores[:, 1],
            "monetary_score": scores[:, 2],
            "rfm_score": scores.sum(axis=1),
            "tier": pa.array([TIERS[min(int(s), 2)] for s in scores.sum(axis=1)], pa.string()),
        }
    )
    files[("segments", "rfm")] = [PartFile("part-00000.parquet", parquet_bytes(rfm), rfm.num_rows)]

    clusters = rng.integers(0, CLUSTERS, customers)
    assigned = pa.table(
        {
            "customer_id": pa.array(ids, pa.string()),
            "cluster_id": pa.array(clusters, pa.int64()),
            "l1_distance": rng.random(customers) * 4.0,
            "model_version": pa.array(["3"] * customers, pa.string()),
        }
    )
    counts = np.bincount(clusters, minlength=CLUSTERS)
    summary = [
        {"cluster_id": c, "count": int(n), "mean_l1_distance": 2.0, "share": float(n / customers)}
        for c, n in enumerate(counts)
    ]
    moves = [{"from": str(c), "to": str(c), "count": int(n)} for c, n in enumerate(counts)]
    profiles = {
        str(c): {
            "cluster_id": c,
            "members": int(n),
            "share": float(n / customers),
            "name": f"home decor, {TIERS[c % 3]} value",
            "mean_revenue": 120.0,
            "mean_orders": 3.0,
            "tiers": {t: int(n) // 3 for t in TIERS},
            "top_categories": [{"category": "home decor", "share": 0.4, "overall": 0.2, "lift": 2.0}],
            "top_products": [{"product_id": items[c % products], "share": 0.1, "overall": 0.05, "lift": 2.0}],
        }
        for c, n in enumerate(counts)
    }
    files[("segments", "customers")] = [
        PartFile("assignments/part-00000.parquet", parquet_bytes(assigned), assigned.num_rows),
        PartFile("summary.json", json.dumps(summary).encode()),
        PartFile("migration.json", json.dumps(moves).encode()),
        PartFile("profiles.json", json.dumps(profiles).encode()),
    ]
    product_clusters = rng.integers(0, CLUSTERS, products)
    product_counts = np.bincount(product_clusters, minlength=CLUSTERS)
    files[("segments", "products")] = [
        PartFile(
            "assignments/part-00000.parquet",
            parquet_bytes(
                pa.table(
                    {
                        "product_id": pa.array(items, pa.string()),
                        "cluster_id": pa.array(product_clusters, pa.int64()),
                        "l1_distance": rng.random(products),
                        "model_version": pa.array(["3"] * products, pa.string()),
                    }
                )
            ),
            products,
        ),
        PartFile(
            "summary.json",
            json.dumps(
                [
                    {"cluster_id": c, "count": int(n), "mean_l1_distance": 1.0, "share": float(n / products)}
                    for c, n in enumerate(product_counts)
                ]
            ).encode(),
        ),
        PartFile("migration.json", json.dumps([]).encode()),
    ]

    vectors = rng.normal(size=(customers, PROFILE_DIM)).astype(np.float32)
    flat = pa.array(vectors.ravel(), pa.float32())
    profile_table = pa.table(
        {
            "customer_id": pa.array(ids, pa.string()),
            "profile": pa.FixedSizeListArray.from_arrays(flat, PROFILE_DIM),
            "reconstruction_error": rng.random(customers),
        }
    )
    files[("scores", "customer_profiles")] = [PartFile("part-00000.parquet", parquet_bytes(profile_table), customers)]

    catalogue = pa.table(
        {
            "product_id": pa.array(items, pa.string()),
            "title": pa.array([f"Product {i}" for i in range(products)], pa.string()),
            "category_path": pa.array([f"home/decor/{i % 40}" for i in range(products)], pa.string()),
        }
    )
    files[("validated", "products")] = [PartFile("part-00000.parquet", parquet_bytes(catalogue), products)]
    return files


def daily_reports(day: dt.date, customers: int) -> dict[tuple[str, str], list[PartFile]]:
    """The small per-day reports the dashboard reads (training, validation Data Docs, RFM)."""
    metrics = {"recall_at_k": 0.21, "precision_at_k": 0.05, "ndcg_at_k": 0.17, "hit_rate_at_k": 0.4, "auc": 0.8}
    training = {
        "date": day.isoformat(),
        "model": "customer-preference",
        "version": "3",
        "mlflow_run_id": f"run{day:%Y%m%d}",
        "mlflow_experiment_id": "1",
        "champion_version": "3",
        "gate": {"promote": False, "reason": "the challenger does not beat the champion"},
        "k": K,
        "holdout": {**metrics, "examples": 20000.0},
        "baselines": {"popularity": metrics, "buy_again": metrics},
        "slices": {},
    }
    low, mid = customers // 2, customers // 3
    tiers = {"tiers": {"low": low, "mid": mid, "high": customers - low - mid}}
    return {
        ("reports", "training"): [PartFile("summary.json", json.dumps(training).encode())],
        ("reports", "validation"): [PartFile("index.html", b"<html><body>Data Docs</body></html>")],
        ("reports", "rfm"): [PartFile("rfm.json", json.dumps(tiers).encode())],
    }


def publish_year(store: ObjectStore, days: int, customers: int, products: int) -> float:
    start = time.perf_counter()
    big = per_customer_files(customers, products)
    for index in range(days):
        day = FIRST_DAY + dt.timedelta(days=index)
        for (layer, table), parts in {**big, **daily_reports(day, customers)}.items():
            extra = {"model_version": "3"} if table == "customer_profiles" else None
            ref = PartitionRef(layer, table, day)
            publish_files(store, ref, parts, run_id="bench", code_version="bench", extra=extra)
    return time.perf_counter() - start


def days_by_manifest_requests(store: ObjectStore, layer: str, table: str) -> list[dt.date]:
    """The obvious listing: the day folders, then one request per day for its manifest."""
    base = PartitionRef(layer, table, FIRST_DAY).prefix.rsplit("dt=", 1)[0]
    return sorted(
        dt.date.fromisoformat(p[-11:-1]) for p in store.list_prefixes(base) if store.exists(p + MANIFEST_NAME)
    )


def timed(call, repeat: int) -> tuple[float, float]:
    """(first call's seconds, median of ``repeat`` more)."""
    seconds = []
    for index in range(repeat + 1):
        start = time.perf_counter()
        call(index)
        seconds.append(time.perf_counter() - start)
    return seconds[0], statistics.median(seconds[1:])


def main() -> None:
    parser = harness.parser(__doc__)
    parser.add_argument("--days", type=int, default=365)
    parser.add_argument("--customers", type=int, default=100_000)
    parser.add_argument("--products", type=int, default=5_000)
    parser.add_argument("--repeat", type=int, default=7)
    args = harness.pick(parser.parse_args(), days=3, customers=300, products=60, repeat=1)

    from fastapi.testclient import TestClient

    from include.preference.webapp.app import airflow_user, create_app
    from include.preference.webapp.outputs import Outputs

    with tempfile.TemporaryDirectory(prefix="bench-pages-") as home, running_lake(Path(home)) as (_, store):
        published = publish_year(store, args.days, args.customers, args.products)
        print(f"published {args.days} days x {args.customers:,} customers in {published:.0f} s")

        start = time.perf_counter()
        one = list_partitions(store, "scores", "recommendations")
        listing = time.perf_counter() - start
        start = time.perf_counter()
        per_day = days_by_manifest_requests(store, "scores", "recommendations")
        by_requests = time.perf_counter() - start
        assert one == per_day and len(one) == args.days, (len(one), len(per_day))
        print(f"a table's {args.days} days: one listing {listing * 1000:.0f} ms, a request per day {by_requests:.2f} s")

        app = create_app(lambda: Outputs(store, "http://mlflow.invalid"))
        app.dependency_overrides[airflow_user] = lambda: "bench"
        ids = customer_ids(args.customers)
        rng = np.random.default_rng(11)
        chosen = [ids[i] for i in rng.choice(args.customers, size=args.repeat + 1, replace=False)]
        with TestClient(app) as client:

            def dashboard(_: int) -> None:
                page = client.get("/ui")
                assert page.status_code == 200 and 'id="champion-version">3<' in page.text, page.text[:500]

            def customer(index: int) -> None:
                page = client.get(f"/ui/customers/{chosen[index]}")
                assert page.status_code == 200 and f'<span id="customer-id">{chosen[index]}</span>' in page.text
                assert page.text.count("<tr") >= K  # the top-K rows are on the page

            dashboard_cold, dashboard_warm = timed(dashboard, args.repeat)
            customer_cold, customer_warm = timed(customer, args.repeat)
    print(f"dashboard: first {dashboard_cold:.3f} s, then median {dashboard_warm:.3f} s")
    print(f"customer page: first {customer_cold:.3f} s, then median {customer_warm:.3f} s")
    met = max(dashboard_warm, customer_warm) < GOAL_SECONDS
    harness.record(
        "bench_pages",
        args,
        title=f"the dashboard and a customer's page (GET, the app in process) with {args.days} days published and "
        f"{args.customers:,} customers: seconds / the 1-second goal; listing a table's days: a request per day / "
        "one listing",
        result=f"dashboard {dashboard_warm:.2f} s (first {dashboard_cold:.2f} s), customer {customer_warm:.2f} s "
        f"(first {customer_cold:.2f} s); listing {by_requests / max(listing, 1e-9):.0f}x faster",
        ratios={
            "dashboard / 1 s": dashboard_warm / GOAL_SECONDS,
            "customer page / 1 s": customer_warm / GOAL_SECONDS,
            "first customer page / 1 s": customer_cold / GOAL_SECONDS,
            "a request per day / one listing": by_requests / max(listing, 1e-9),
        },
        goal="each page under 1 s",
        met=met,
        seconds={
            "publish": published,
            "dashboard_first": dashboard_cold,
            "dashboard": dashboard_warm,
            "customer_first": customer_cold,
            "customer": customer_warm,
            "listing": listing,
            "listing_by_requests": by_requests,
        },
        sizes={"days": args.days, "customers": args.customers, "products": args.products, "repeat": args.repeat},
    )


if __name__ == "__main__":
    main()
