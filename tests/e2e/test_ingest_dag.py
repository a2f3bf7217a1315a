"""The ingest DAG, run by Airflow itself (dag.test) against the real S3 server."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest

from include.preference.schema import TABLES
from include.preference.sources.synthetic import SyntheticConfig, generate_day
from include.preference.storage import PartitionRef, list_partitions, read_manifest, read_table

pytestmark = [pytest.mark.e2e, pytest.mark.integration]

DAGS_FOLDER = Path(__file__).resolve().parents[2] / "dags"
SMALL = {"seed": 21, "customers": 300, "products": 60, "sessions_per_day": 200}


@pytest.fixture(autouse=True)
def mlflow_env(mlflow_service, monkeypatch, tmp_path):
    """The DAG's MLflow (segment reports) and a model name of its own: no champion until trained."""
    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_service.mlflow_uri)
    monkeypatch.setenv("PREFERENCE_MODEL_NAME", f"dag-{tmp_path.name[-12:]}".replace("_", "-"))


def run_dag(dag_id: str, day: dt.date, conf: dict):
    """A manual run that processes ``day``: its data interval is the last complete day before it."""
    from airflow.dag_processing.dagbag import DagBag

    dag = DagBag(dag_folder=str(DAGS_FOLDER)).get_dag(dag_id)
    trigger_time = dt.datetime.combine(day + dt.timedelta(days=1), dt.time(6), dt.UTC)
    run = dag.test(logical_date=trigger_time, run_conf=conf)
    assert run.data_interval_start.date() == day
    return run


def test_ingest_lands_every_raw_table_for_the_logical_date_and_a_rerun_is_identical(airflow_db, lake_env):
    store = lake_env
    day = dt.date(2025, 3, 1)
    run = run_dag("marketplace_ingest_daily", day, SMALL)
    assert run.state == "success"
    states = {ti.task_id: ti.state for ti in run.get_task_instances()}
    assert states == {
        "land_raw_data": "success",
        "validate_raw_data": "success",
        "build_features": "success",
        "build_training_data": "skipped",  # the first day has no anchor whose horizon is complete
        "train_model": "skipped",  # nothing new to train on: it follows build_training_data
        "train_profile_model": "skipped",
        "score_profiles": "skipped",  # no profile model is champion yet
        "compute_rfm": "success",
        "embed_reviews": "success",
        # No model is champion yet: nothing to score or segment with.
        "score_products": "skipped",
        "score_customers": "skipped",
        "refresh_segments": "skipped",
        "assign_segments": "skipped",
    }
    tiers = read_manifest(store, PartitionRef("segments", "rfm", day))
    assert tiers.run_id == run.run_id and sum(tiers.extra["tiers"].values()) == tiers.row_count > 0

    expected = generate_day(SyntheticConfig(**SMALL), day)
    manifests = {}
    for table in TABLES:
        ref = PartitionRef("raw", table, day)
        assert list_partitions(store, "raw", table) == [day]
        assert read_table(store, ref).equals(expected[table]), table
        manifests[table] = read_manifest(store, ref)
        assert manifests[table].run_id == run.run_id
        assert manifests[table].code_version == "test"
        assert manifests[table].extra["generator"]["customers"] == SMALL["customers"]
    assert manifests["events"].row_count > 100
    for table in TABLES:
        validated = read_manifest(store, PartitionRef("validated", table, day))
        quarantined = read_manifest(store, PartitionRef("quarantine", table, day))
        assert validated.row_count + quarantined.row_count == manifests[table].row_count, table
        assert validated.extra["rows_in"] == manifests[table].row_count
    # The generator plants cancellations; validation files them under their rule.
    assert read_manifest(store, PartitionRef("quarantine", "orders", day)).extra["by_rule"].get("cancellation", 0) > 0
    report = read_manifest(store, PartitionRef("reports", "validation", day))
    assert any(f.path.endswith("index.html") for f in report.files)
    customers = read_manifest(store, PartitionRef("features", "customers", day))
    assert customers.extra["mode"] == "full"  # no earlier state: the first day starts the chain
    assert customers.row_count == manifests["customers"].row_count

    objects_before = sorted(store.list_keys(""))
    rerun = run_dag("marketplace_ingest_daily", day, SMALL)
    assert rerun.state == "success"
    for table in TABLES:
        again = read_manifest(store, PartitionRef("raw", table, day))
        assert (again.version, again.files, again.row_count) == (
            manifests[table].version,
            manifests[table].files,
            manifests[table].row_count,
        )
    # raw, validated, quarantine, report and features alike
    assert sorted(store.list_keys("")) == objects_before


def test_ingest_fails_clearly_when_the_lake_refuses_the_keys(airflow_db, lake_env, monkeypatch):
    import json

    connection = json.loads(__import__("os").environ["AIRFLOW_CONN_AWS_DEFAULT"])
    connection["password"] = "wrong-secret"
    monkeypatch.setenv("AIRFLOW_CONN_AWS_DEFAULT", json.dumps(connection))
    run = run_dag("marketplace_ingest_daily", dt.date(2025, 3, 2), SMALL)
    assert run.state == "failed"
    assert list_partitions(lake_env, "raw", "events") == []


def test_two_days_build_features_incrementally_and_the_second_writes_training_data(airflow_db, lake_env, monkeypatch):
    store = lake_env
    monkeypatch.setenv("PREFERENCE_HORIZON_DAYS", "1")
    first, second = dt.date(2025, 2, 10), dt.date(2025, 2, 11)  # before the other tests' days
    run_dag("marketplace_ingest_daily", first, SMALL)
    run = run_dag("marketplace_ingest_daily", second, SMALL)
    states = {ti.task_id: ti.state for ti in run.get_task_instances()}
    # Training waits for a second anchor: the holdout is the first day's examples, nothing precedes it.
    trained = (states.pop("train_model"), states.pop("train_profile_model"))
    assert run.state == "success" and trained == ("skipped", "skipped"), states
    unscored = {
        t: states.pop(t)
        for t in ("score_products", "score_customers", "score_profiles", "refresh_segments", "assign_segments")
    }
    assert set(unscored.values()) == {"skipped"}, unscored
    assert set(states.values()) == {"success"}, states
    features = read_manifest(store, PartitionRef("features", "customers", second))
    assert features.extra["mode"] == "incremental" and features.run_id == run.run_id
    training = read_manifest(store, PartitionRef("training", "", first))
    assert training.extra["label_days"] == [second.isoformat()]
    assert any(f.path.endswith(".tfrecord.gz") for f in training.files)
    assert training.extra["positives"] > 0 and training.extra["negatives"] >= training.extra["positives"]
