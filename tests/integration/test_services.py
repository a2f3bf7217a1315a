"""The embedded runtime: real SeaweedFS, MLflow server and Airflow standalone on free ports."""

from __future__ import annotations

import datetime as dt
import os
import urllib.request
from pathlib import Path

import pytest

from include.preference.airflow_client import AirflowApiError, AirflowClient
from include.preference.services import ADMIN_USER, ServiceManager, ephemeral_runtime, load_env_files

pytestmark = pytest.mark.integration


def test_mlflow_server_stores_run_artifacts_in_the_lake_bucket(mlflow_service, tmp_path: Path, monkeypatch):
    import mlflow

    from include.preference.demo import store_for

    runtime = mlflow_service
    monkeypatch.setenv("MLFLOW_TRACKING_URI", runtime.mlflow_uri)
    client = mlflow.MlflowClient(tracking_uri=runtime.mlflow_uri)
    experiment = client.create_experiment(f"services-test-{os.getpid()}")
    run = client.create_run(experiment)
    artifact = tmp_path / "note.txt"
    artifact.write_text("hello lake")
    client.log_artifact(run.info.run_id, str(artifact))
    client.log_metric(run.info.run_id, "auc", 0.5)
    client.set_terminated(run.info.run_id)

    keys = [k for k in store_for(runtime).list_keys("mlflow/") if k.endswith("note.txt")]
    assert len(keys) == 1 and run.info.run_id in keys[0]
    assert store_for(runtime).get_bytes(keys[0]) == b"hello lake"
    assert client.get_run(run.info.run_id).data.metrics["auc"] == 0.5


def test_status_reports_health_and_stop_works_by_pid(mlflow_service):
    manager = ServiceManager(mlflow_service)
    report = manager.status()
    assert report["s3"]["healthy"] and report["mlflow"]["healthy"]
    assert report["airflow"]["pid"] is None and not report["airflow"]["healthy"]


def test_a_stopped_service_is_gone_and_its_port_closed(tmp_path: Path):
    runtime = ephemeral_runtime(tmp_path)
    manager = ServiceManager(runtime)
    manager.start("s3")
    pid = manager.pid("s3")
    assert pid and Path(f"/proc/{pid}").exists()
    manager.start("s3")  # already healthy: no second process
    assert manager.pid("s3") == pid
    assert manager.stop("s3") is True
    assert not Path(f"/proc/{pid}").exists() or "zombie" in Path(f"/proc/{pid}/status").read_text().lower()
    with pytest.raises(OSError):
        urllib.request.urlopen(runtime.s3_endpoint, timeout=2)
    assert manager.stop("s3") is False


def test_generated_credentials_are_created_once_and_kept(tmp_path: Path):
    first = load_env_files(tmp_path, env={})
    second = load_env_files(tmp_path, env={})
    assert (
        first["AWS_SECRET_ACCESS_KEY"] == second["AWS_SECRET_ACCESS_KEY"] and len(first["AWS_SECRET_ACCESS_KEY"]) >= 24
    )
    assert oct((tmp_path / "generated.env").stat().st_mode)[-3:] == "600"
    assert load_env_files(tmp_path, env={"AWS_SECRET_ACCESS_KEY": "mine"})["AWS_SECRET_ACCESS_KEY"] == "mine"


@pytest.mark.e2e
@pytest.mark.slow
def test_airflow_standalone_runs_a_backfill_of_the_ingest_dag(tmp_path: Path):
    from include.preference.demo import published_partitions, store_for

    runtime = ephemeral_runtime(tmp_path)
    manager = ServiceManager(runtime)
    try:
        manager.up(("s3", "mlflow", "airflow"))  # the DAG scores with the champion: MLflow too
        client = AirflowClient(runtime.airflow_url, ADMIN_USER, runtime.admin_password)
        dag = client.wait_for_dag("marketplace_ingest_daily")
        assert dag["is_paused"] is True  # new DAGs start paused
        client.set_paused("marketplace_ingest_daily", False)
        start, end = dt.date(2025, 2, 1), dt.date(2025, 2, 2)
        conf = {"customers": 300, "products": 60, "sessions_per_day": 150}
        client.create_backfill("marketplace_ingest_daily", start, end, conf=conf)
        try:
            runs = client.wait_for_runs("marketplace_ingest_daily", start, end, expected=2, timeout=600)
        except AirflowApiError as error:
            raise AssertionError(f"{error}\n--- airflow log (tail) ---\n{manager.log_tail('airflow')}") from error
        assert [r["state"] for r in runs] == ["success", "success"]
        assert [r["run_type"] for r in runs] == ["backfill", "backfill"]
        # Asking again at once (as a second `make demo` does) waits for Airflow to close the first
        # backfill instead of failing with 409; with nothing failed, it adds no run.
        again = client.create_backfill("marketplace_ingest_daily", start, end, conf=conf, reprocess="failed")
        if again is not None:
            client.wait_for_backfill(int(again["id"]), timeout=300)
        rerun = client.wait_for_runs("marketplace_ingest_daily", start, end, expected=2, timeout=300)
        assert [(r["dag_run_id"], r["state"]) for r in rerun] == [(r["dag_run_id"], "success") for r in runs]
        found = {(layer, table, date) for layer, table, date, _ in published_partitions(store_for(runtime))}
        for table in ("events", "orders", "products", "customers", "reviews"):
            for day in ("2025-02-01", "2025-02-02"):
                assert ("raw", table, day) in found
        # A wrong password is refused by Airflow itself.
        with pytest.raises(Exception, match="401"):
            AirflowClient(runtime.airflow_url, ADMIN_USER, "wrong").token()
    finally:
        manager.down()
    assert manager.status()["airflow"]["pid"] is None
