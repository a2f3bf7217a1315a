"""The production-shaped profile, for real on this machine: Airflow on PostgreSQL with the
CeleryExecutor and Redis, Celery workers for the `default` and `gpu` queues, MLflow on PostgreSQL,
and a Spark standalone cluster (a master and two workers) that every Spark job runs on, training
with two TensorFlow workers in a barrier stage. Same DAG and code as the embedded profile; only
configuration differs.

The Spark workers and the Celery workers run as if on separate hosts: each in a mount namespace of
its own with an empty tmpfs over the others' private folders (temporary files, scratch, Spark's local
directories and home), so no process
can read what another wrote to its disk. They share S3, the databases and the broker only.

One backfill of 3 days with 3 concurrent runs serves every test here: routing (training ran on the
gpu worker), the stores (PostgreSQL), the cluster and the isolation, and equality with the same days
run one by one on local Spark in this process (the embedded profile's way), trained models included.
(Rerunning a day through Airflow is the demo test's second run, `test_services.py`.)
Why that size: with a 1-day label horizon, day 1 builds features in full, day 2 folds its day
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
    ISOLATED_SERVICES,
    PRODUCTION_SERVICES,
    Runtime,
    ServiceManager,
    conninfo,
    drop_database,
    ephemeral_runtime,
)
from include.preference.storage import ObjectStore, PartitionRef, read_file, read_manifest
from tests.support.namespaces import require_namespaces
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
    "PREFERENCE_TRAINING_WORKERS": "2",
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
    require_namespaces()
    home = tmp_path_factory.mktemp("production")
    with pytest.MonkeyPatch.context() as patch:
        for name, value in SETTINGS.items():
            patch.setenv(name, value)
        runtime = dataclasses.replace(
            ephemeral_runtime(home, profile="production", servers_of=database_servers), isolated=True
        )
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
    assert ("train_model", last) in gpu and ("train_profile_model", last) in gpu
    assert {task for task, _ in gpu} == {"train_model", "train_profile_model"}
    assert not {"train_model", "train_profile_model"} & {task for task, _ in default}
    assert {"land_raw_data", "validate_raw_data", "build_features", "embed_reviews"} <= {task for task, _ in default}


def test_spark_jobs_ran_on_the_cluster_and_training_on_two_workers(production):
    runtime, manager, *_ = production
    master = manager._spark_master()  # noqa: SLF001 - the master's own status page
    assert master is not None and master["status"] == "ALIVE"
    assert len([w for w in master["workers"] if w["state"] == "ALIVE"]) == 2
    apps = {app["name"] for app in master["completedapps"]}
    assert {"build_features", "build_training_data", "train_model", "train_profile_model"} <= apps, apps
    # Executors kept their shuffle files in their worker's own folder, never in a shared one.
    for index in (1, 2):
        spark_dirs = manager.private_dir(f"spark-worker-{index}") / "spark"
        assert any(spark_dirs.glob("spark-*")), f"spark-worker-{index} ran no executor"
    from mlflow.tracking import MlflowClient

    client = MlflowClient(runtime.mlflow_uri)
    runs = [r for e in client.search_experiments() for r in client.search_runs([e.experiment_id])]
    trained = [r for r in runs if "workers" in r.data.params]
    assert trained and all(r.data.params["workers"] == "2" for r in trained)


def test_no_worker_can_see_another_workers_disk(production):
    """Each Spark and Celery worker has an empty tmpfs over the others' private folders (their
    temporary files, scratch and home directories)."""
    runtime, manager, *_ = production
    isolated = [name for name in ISOLATED_SERVICES if name in runtime.services]
    assert len(isolated) == 4
    for name in isolated:
        pid = manager.pid(name)
        assert pid is not None, name
        mounts = {
            line.split(" - ")[0].split()[4]: line.split(" - ")[1].split()[0]
            for line in Path(f"/proc/{pid}/mountinfo").read_text().splitlines()
        }
        hidden = [str(manager.private_dir(other)) for other in isolated if other != name]
        assert all(mounts.get(path) == "tmpfs" for path in hidden), (name, hidden)
        assert mounts.get(str(manager.private_dir(name))) is None, name  # its own folder is its disk


def test_airflow_and_mlflow_keep_their_state_in_postgresql(production):
    runtime, *_ = production
    states = _rows(
        runtime.airflow_database_url,
        f"SELECT state FROM dag_run WHERE dag_id = '{DAG_ID}' AND run_type = 'backfill'",  # noqa: S608
    )
    assert sorted(s for (s,) in states) == ["success"] * DAYS
    # Day 3 trained and registered; a backfill never moves `champion`.
    versions = "SELECT count(*) FROM model_versions WHERE name = 'customer-preference'"
    assert _rows(runtime.mlflow_database_url, versions)[0][0] == 1
    profiles = "SELECT count(*) FROM model_versions WHERE name = 'customer-preference-profile'"
    assert _rows(runtime.mlflow_database_url, profiles)[0][0] == 1  # the profile, registered on its own
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

    env = {
        **runtime.client_env(),
        "PREFERENCE_BUCKET": bucket,
        "PREFERENCE_CODE_VERSION": "one-by-one",
        "PREFERENCE_MODEL_NAME": "one-by-one",
    }
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
            tasks.train_model(day, run_id=run_id, backfill=True)
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
    # The model trained on the cluster (two workers, executors on other "hosts") and the one trained
    # here on local Spark from the same partitions score the holdout the same.
    trained = [d for d in days if read_manifest(store_for(runtime), PartitionRef("reports", "training", d))]
    assert trained, "no day trained"
    for day in trained:
        ref = PartitionRef("reports", "training", day)
        on_cluster = json.loads(read_file(store_for(runtime), ref, "summary.json"))
        here = json.loads(read_file(store_for(dataclasses.replace(runtime, bucket="one-by-one")), ref, "summary.json"))
        assert on_cluster["workers"] and len(on_cluster["workers"]) == 2
        assert on_cluster["holdout"] == here["holdout"], (day, on_cluster["holdout"], here["holdout"])
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
