"""The production-shaped profile, for real on this machine: Airflow on PostgreSQL with the
CeleryExecutor and Redis, Celery workers for the `default` and `gpu` queues, MLflow on PostgreSQL.
Same DAG and code as the embedded profile; only configuration differs.

One backfill of 3 days with 3 concurrent runs serves every test here: routing (training ran on the
gpu worker), the stores (PostgreSQL), equality with the same days run one by one, and a rerun of a
day. Why that size: with a 1-day label horizon, day 1 builds features in full, day 2 folds its day
in incrementally and is the first to write training examples (for anchor 1), and day 3 is the first
that trains (holdout anchor 2, training anchor 1): 3 days is the fewest that show training on the
gpu worker, a backfill that registers a model and never promotes it, and incremental feature
builds folding days in order; 3 runs at once keep every `depends_on_past` task waiting on the day
before while the other tasks of all three days overlap, which is what the equality guards against.
More days repeat the same steps.
PostgreSQL and Redis are the session's (one of each); this module's runtime has databases and a
Redis database of its own on them.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import os
import re
from pathlib import Path

import psycopg
import pytest

from include.preference.airflow_client import AirflowApiError, AirflowClient
from include.preference.demo import store_for
from include.preference.services import (
    ADMIN_USER,
    PRODUCTION_SERVICES,
    Runtime,
    ServiceManager,
    conninfo,
    drop_database,
    ephemeral_runtime,
)
from include.preference.storage import ObjectStore
from tests.support.snapshots import snapshot

# The module fixture (services up, then the whole backfill) runs inside the first test's time limit.
pytestmark = [pytest.mark.integration, pytest.mark.e2e, pytest.mark.slow, pytest.mark.timeout(1800)]

DAG_ID = "marketplace_ingest_daily"
DAYS = 3
CONCURRENT_RUNS = 3
# A small world; with a 1-day label horizon days 2 and 3 write training examples and day 3 trains.
SETTINGS = {
    "PREFERENCE_HORIZON_DAYS": "1",
    "PREFERENCE_SYNTH_CUSTOMERS": "150",
    "PREFERENCE_SYNTH_PRODUCTS": "40",
    "PREFERENCE_SYNTH_SESSIONS_PER_DAY": "120",
    "PREFERENCE_TRAINING_EPOCHS": "2",
}
# The Celery executor's worker-side line for each workload it runs.
WORKLOAD = re.compile(r"Executing workload in Celery: .*?task_id='(?P<task>[a-z_]+)'.*?run_id='(?P<run>[^']+)'")
FIGURES = Path(__file__).resolve().parents[2] / ".local" / "test-artifacts" / "backfill.json"


def _workloads(log: Path) -> list[tuple[str, str]]:
    return [(m["task"], m["run"]) for m in WORKLOAD.finditer(log.read_text(errors="replace"))]


def _rows(url: str, query: str) -> list[tuple]:
    with psycopg.connect(conninfo(url)) as conn:
        return conn.execute(query).fetchall()


@pytest.fixture(scope="module")
def production(tmp_path_factory: pytest.TempPathFactory, database_servers):
    """The production profile, after a backfill of DAYS days with CONCURRENT_RUNS at once (DAG paused before)."""
    home = tmp_path_factory.mktemp("production")
    with pytest.MonkeyPatch.context() as patch:
        for name, value in SETTINGS.items():
            patch.setenv(name, value)
        runtime = ephemeral_runtime(home, profile="production", servers_of=database_servers)
        manager = ServiceManager(runtime)
        end = dt.datetime.now(dt.UTC).date() - dt.timedelta(days=1)
        start = end - dt.timedelta(days=DAYS - 1)
        try:
            manager.up()
            client = AirflowClient(runtime.airflow_url, ADMIN_USER, runtime.admin_password)
            client.wait_for_dag(DAG_ID)
            # Created while the DAG is paused; the range ends with the latest complete day, so
            # unpausing schedules no run of its own.
            backfill = client.create_backfill(DAG_ID, start, end, max_active_runs=CONCURRENT_RUNS)
            assert backfill is not None
            client.set_paused(DAG_ID, False)
            started = dt.datetime.now(dt.UTC)
            try:
                runs = client.wait_for_runs(DAG_ID, start, end, expected=DAYS, timeout=1500)
            except AirflowApiError as error:
                tails = "\n".join(
                    f"--- {n} ---\n{manager.log_tail(n, 30)}" for n in ("scheduler", "worker-default", "worker-gpu")
                )
                raise AssertionError(f"{error}\n{tails}") from error
            seconds = (dt.datetime.now(dt.UTC) - started).total_seconds()
            yield runtime, manager, client, runs, seconds
        finally:
            manager.down()
            for url in (runtime.airflow_database_url, runtime.mlflow_database_url):
                drop_database(url)
    assert all(manager.status()[name]["pid"] is None for name in runtime.services)


def test_every_service_of_the_profile_is_up_and_the_backfill_succeeds(production):
    runtime, manager, _, runs, _ = production
    status = manager.status()
    # The session's PostgreSQL and Redis serve this runtime: it starts every other service itself.
    assert list(status) == [name for name in PRODUCTION_SERVICES if name not in ("postgres", "redis")]
    assert all(info["healthy"] for info in status.values()), status
    assert len(runs) == DAYS
    assert [r["state"] for r in runs] == ["success"] * DAYS, [(r["dag_run_id"], r["state"]) for r in runs]
    assert {r["run_type"] for r in runs} == {"backfill"}


def test_training_runs_on_the_gpu_worker_and_everything_else_on_default(production):
    _, manager, client, runs, _ = production
    last = runs[-1]["dag_run_id"]
    tis = {t["task_id"]: t for t in client.task_instances(DAG_ID, last)}
    assert tis["train_model"]["state"] == "success"  # trained, not skipped
    assert tis["train_model"]["queue"] == "gpu" and tis["land_raw_data"]["queue"] == "default"
    # Which worker ran what, from the workers' own logs.
    gpu = _workloads(manager.log_file("worker-gpu"))
    default = _workloads(manager.log_file("worker-default"))
    assert ("train_model", last) in gpu
    assert {task for task, _ in gpu} == {"train_model"}
    assert "train_model" not in {task for task, _ in default}
    assert {"land_raw_data", "validate_raw_data", "build_features", "embed_reviews"} <= {task for task, _ in default}


def test_airflow_and_mlflow_keep_their_state_in_postgresql(production):
    runtime, *_ = production
    states = _rows(
        runtime.airflow_database_url,
        f"SELECT state FROM dag_run WHERE dag_id = '{DAG_ID}' AND run_type = 'backfill'",  # noqa: S608
    )
    assert sorted(s for (s,) in states) == ["success"] * DAYS
    # Day 3 trained and registered; a backfill never moves `champion`.
    assert _rows(runtime.mlflow_database_url, "SELECT count(*) FROM model_versions")[0][0] == 1
    assert (
        _rows(runtime.mlflow_database_url, "SELECT count(*) FROM registered_model_aliases WHERE alias = 'champion'")[0][
            0
        ]
        == 0
    )
    finished = _rows(runtime.mlflow_database_url, "SELECT count(*) FROM runs WHERE status = 'FINISHED'")[0][0]
    assert finished >= 1


def _run_days_one_by_one(runtime: Runtime, bucket: str, days: list[dt.date]) -> ObjectStore:
    """The same task code, day after day in this process, into another bucket of the same S3."""
    from include.preference import tasks

    env = {**runtime.client_env(), "PREFERENCE_BUCKET": bucket, "PREFERENCE_CODE_VERSION": "one-by-one"}
    with pytest.MonkeyPatch.context() as patch:
        for name, value in {**SETTINGS, **env}.items():
            patch.setenv(name, value)
        store = store_for(dataclasses.replace(runtime, bucket=bucket))
        store.ensure_bucket()
        for day in days:
            run_id = f"one_by_one__{day.isoformat()}"
            tasks.land_raw_data(day, run_id=run_id)
            tasks.validate_raw_data(day, run_id=run_id)
            tasks.build_features(day, run_id=run_id)
            tasks.build_training_data(day, run_id=run_id)
            tasks.compute_rfm(day, run_id=run_id)
            tasks.embed_reviews(day, run_id=run_id)
    return store


def test_a_concurrent_backfill_equals_the_days_run_one_by_one(production):
    runtime, _, _, runs, seconds = production
    days = [dt.date.fromisoformat(r["logical_date"][:10]) for r in runs]
    concurrent = snapshot(store_for(runtime))
    started = dt.datetime.now(dt.UTC)
    one_by_one = snapshot(_run_days_one_by_one(runtime, "one-by-one", days))
    in_process = (dt.datetime.now(dt.UTC) - started).total_seconds()
    tables = {(layer, table) for layer, table, _ in concurrent}
    # Every layer the chain writes before a model is champion, for every day.
    assert {("features", "customer_text"), ("training", ""), ("segments", "rfm")} <= tables, tables
    assert len(concurrent) > DAYS * 10
    assert concurrent.keys() == one_by_one.keys()
    different = sorted(key for key in concurrent if concurrent[key] != one_by_one[key])
    assert not different, different
    FIGURES.parent.mkdir(parents=True, exist_ok=True)
    FIGURES.write_text(
        json.dumps(
            {
                "days": DAYS,
                "concurrent_runs": CONCURRENT_RUNS,
                "profile": "production (PostgreSQL, CeleryExecutor + Redis)",
                "backfill_seconds": round(seconds, 1),
                "one_by_one_in_process_seconds": round(in_process, 1),
                "partitions_compared": len(concurrent),
                "partitions_different": len(different),
                "cpus": os.cpu_count(),
            },
            indent=2,
        )
    )


def test_rerunning_a_day_rewrites_identical_outputs(production):
    runtime, _, client, runs, _ = production
    run = runs[1]  # an incremental day (its features fold onto the day before) that writes training data
    day = dt.date.fromisoformat(run["logical_date"][:10])
    store = store_for(runtime)
    before = snapshot(store, {day})
    tries = {t["task_id"]: t["try_number"] for t in client.task_instances(DAG_ID, run["dag_run_id"])}
    client.clear_run(DAG_ID, run["dag_run_id"])
    again = client.wait_for_runs(DAG_ID, day, day, expected=1, timeout=900)
    assert [r["state"] for r in again] == ["success"]
    retried = {t["task_id"]: t["try_number"] for t in client.task_instances(DAG_ID, run["dag_run_id"])}
    assert retried["land_raw_data"] > tries["land_raw_data"]  # it really ran again
    assert len(before) >= 10 and snapshot(store, {day}) == before
