"""``make demo``: start the embedded services, run the pipeline's DAGs through Airflow, summarise.

The DAG chain runs as a backfill of a few consecutive past days, created through Airflow's REST
API, so the scheduler and the LocalExecutor run every task exactly as in daily operation.
"""

from __future__ import annotations

import datetime as dt
import logging
import time
from dataclasses import dataclass
from typing import Any

from include.preference.airflow_client import AirflowClient
from include.preference.config import S3Settings
from include.preference.services import ADMIN_USER, Runtime, ServiceManager
from include.preference.storage import LAYERS, ObjectStore, list_partitions, list_tables, read_manifest
from include.preference.storage.partitions import PartitionRef

log = logging.getLogger(__name__)

# The DAGs of the chain, in order; each runs for the same logical dates.
DEMO_DAGS = ("marketplace_ingest_daily",)


def last_complete_day(now: dt.datetime | None = None) -> dt.date:
    """Yesterday in UTC: the newest day whose data interval has ended."""
    now = now or dt.datetime.now(dt.UTC)
    return now.astimezone(dt.UTC).date() - dt.timedelta(days=1)


@dataclass(frozen=True)
class DemoResult:
    runs: dict[str, list[dict[str, Any]]]
    partitions: list[tuple[str, str, str, str]]
    seconds: float
    example_customer: str | None = None

    @property
    def ok(self) -> bool:
        return all(r["state"] == "success" for runs in self.runs.values() for r in runs)


def store_for(runtime: Runtime) -> ObjectStore:
    return ObjectStore(
        S3Settings(
            endpoint_url=runtime.s3_endpoint,
            access_key_id=runtime.access_key_id,
            secret_access_key=runtime.secret_access_key,
            bucket=runtime.bucket,
        )
    )


def published_partitions(store: ObjectStore) -> list[tuple[str, str, str, str]]:
    """(layer, table, date, size) of every manifest-complete partition: rows, or files when not tabular."""
    found = []
    for layer in LAYERS:
        for table in list_tables(store, layer):
            for date in list_partitions(store, layer, table):
                manifest = read_manifest(store, PartitionRef(layer, table, date))
                if manifest is None:
                    continue
                size = (
                    f"rows={manifest.row_count}" if manifest.row_count is not None else f"files={len(manifest.files)}"
                )
                found.append((layer, table, date.isoformat(), size))
    return found


def run_demo(runtime: Runtime, days: int = 3, end: dt.date | None = None) -> DemoResult:
    """Start services and run ``days`` consecutive days ending at ``end`` through Airflow.

    Unpausing a DAG starts its daily schedule; a backfill (re)runs every day of the range with
    the current code (tasks are idempotent, so a rerun rewrites identical partitions). Waits for
    the backfill to complete and lists what the lake holds.
    """
    end = end or last_complete_day()
    started = time.monotonic()
    ServiceManager(runtime).up()
    client = AirflowClient(runtime.airflow_url, ADMIN_USER, runtime.admin_password)
    start = end - dt.timedelta(days=days - 1)
    runs: dict[str, list[dict[str, Any]]] = {}
    for dag_id in DEMO_DAGS:
        client.wait_for_dag(dag_id)
        client.set_paused(dag_id, False)
        backfill = client.create_backfill(dag_id, start, end, max_active_runs=days, reprocess="completed")
        if backfill is not None:
            client.wait_for_backfill(int(backfill["id"]))
        runs[dag_id] = client.wait_for_runs(dag_id, start, end, expected=days)
    store = store_for(runtime)
    return DemoResult(runs, published_partitions(store), time.monotonic() - started, example_customer(store))


def example_customer(store: ObjectStore) -> str | None:
    """A customer with recommendations in the latest scored day (for the summary's link), if any."""
    from include.preference.storage import read_table

    days = list_partitions(store, "scores", "recommendations")
    if not days:
        return None
    ids = read_table(store, PartitionRef("scores", "recommendations", days[-1]), columns=["customer_id"])
    return str(ids.column("customer_id")[0].as_py()) if ids.num_rows else None


def format_summary(runtime: Runtime, result: DemoResult) -> str:
    """What ran, what the lake holds, and where to look."""
    lines = ["", "=== Customer Preference Pipeline: demo summary ===", ""]
    lines.append(f"Airflow runs ({result.seconds:.0f}s in all):")
    for dag_id, runs in result.runs.items():
        for run in runs:
            duration = ""
            if run.get("start_date") and run.get("end_date"):
                seconds = dt.datetime.fromisoformat(run["end_date"]) - dt.datetime.fromisoformat(run["start_date"])
                duration = f"{seconds.total_seconds():.0f}s"
            lines.append(
                f"  {dag_id:32s} {run['logical_date'][:10]}  {run['state']:8s} {duration:>5s}  {run['dag_run_id']}"
            )
    lines.append("")
    lines.append(f"Published partitions in s3://{runtime.bucket}/ (with _MANIFEST.json):")
    for layer, table, date, size in result.partitions:
        lines.append(f"  {layer}/{table}/dt={date}  {size}")
    lines += [
        "",
        f"Airflow UI : {runtime.airflow_url}   login: {ADMIN_USER} / {runtime.admin_password}",
        f"Dashboard  : {runtime.airflow_url}/plugin/customer-preference   (Customer preference, in Airflow's menu)",
        f"Customers  : {runtime.airflow_url}/preference/ui/customers/{result.example_customer or '<customer_id>'}   "
        f"API: {runtime.airflow_url}/preference/docs",
        f"MLflow UI  : {runtime.mlflow_uri}",
        f"S3 (lake)  : {runtime.s3_endpoint}  bucket {runtime.bucket}, keys in {runtime.home}/generated.env or .env",
        "Stop everything with `make down`; `make status` shows what runs.",
        "",
        "RESULT: " + ("all runs succeeded" if result.ok else "some runs FAILED (see the Airflow UI, task logs)"),
    ]
    return "\n".join(lines)
