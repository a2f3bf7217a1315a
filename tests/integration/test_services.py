"""The embedded runtime: real SeaweedFS, MLflow server and Airflow standalone on free ports."""

from __future__ import annotations

import datetime as dt
import os
import socket
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
def test_the_demo_runs_the_days_through_airflow_and_reruns_from_the_ui_form_are_identical(tmp_path: Path, monkeypatch):
    from include.preference.demo import format_summary, last_complete_day, published_partitions, run_demo, store_for
    from tests.support.snapshots import snapshot

    world = {
        "PREFERENCE_SYNTH_CUSTOMERS": "300",
        "PREFERENCE_SYNTH_PRODUCTS": "60",
        "PREFERENCE_SYNTH_SESSIONS_PER_DAY": "150",
    }
    for name, value in world.items():
        monkeypatch.setenv(name, value)
    runtime = ephemeral_runtime(tmp_path)
    manager = ServiceManager(runtime)
    end = last_complete_day()  # the default: unpausing schedules the last day's run
    start = end - dt.timedelta(days=1)
    days = (start.isoformat(), end.isoformat())
    try:
        try:
            result = run_demo(runtime, days=2)  # starts S3, MLflow and Airflow standalone
        except AirflowApiError as error:
            raise AssertionError(f"{error}\n--- airflow log (tail) ---\n{manager.log_tail('airflow')}") from error
        runs = result.runs[DAG_ID]
        assert result.ok and [r["state"] for r in runs] == ["success", "success"]
        # The earlier day as a backfill; the last one scheduled by unpausing the DAG.
        assert [r["run_type"] for r in runs] == ["backfill", "scheduled"]
        found = {(layer, table, date) for layer, table, date, _ in result.partitions}
        for table in ("events", "orders", "products", "customers", "reviews"):
            for day in days:
                assert ("raw", table, day) in found
        summary = format_summary(runtime, result)
        assert (
            "RESULT: all runs succeeded" in summary and f"{runtime.airflow_url}/plugin/customer-preference" in summary
        )
        assert "Online Retail evaluation: skipped" in summary  # none given

        # Then as people use it, in Airflow's UI (Chromium): "Trigger" with the untouched form (a
        # manual run of the last complete day), then "Backfill" of both days reprocessing every run.
        # Each reruns days already published: the lake's content must not change.
        store = store_for(runtime)
        before = snapshot(store)
        client = AirflowClient(runtime.airflow_url, ADMIN_USER, runtime.admin_password)
        manual = _ui_trigger_and_backfill(runtime, client, start, end)
        after = client.dag_runs(DAG_ID, start, end)
        assert sorted(r["run_type"] for r in after) == ["backfill", "backfill", "manual"], after
        assert all(r["state"] == "success" for r in after), after
        assert {r["dag_run_id"] for r in after} == {manual["dag_run_id"], *(r["dag_run_id"] for r in runs)}
        assert snapshot(store) == before
        assert {p[:3] for p in published_partitions(store)} == {p[:3] for p in result.partitions}

        # A file source with a path that does not exist: the first task fails at once (no retry),
        # its log names the path, and nothing is published.
        failed = _ui_trigger_bad_input(runtime, client)
        assert failed["state"] == "failed"
        land = {t["task_id"]: t for t in client.task_instances(DAG_ID, failed["dag_run_id"])}["land_raw_data"]
        assert land["state"] == "failed" and land["try_number"] == 1, land
        assert BAD_INPUT in client.task_log(DAG_ID, failed["dag_run_id"], "land_raw_data", 1)
        assert snapshot(store) == before
        # A wrong password is refused by Airflow itself.
        assert client.dag_runs(DAG_ID, start, end)
        with pytest.raises(Exception, match="401"):
            AirflowClient(runtime.airflow_url, ADMIN_USER, "wrong").token()
    finally:
        manager.down()
    assert manager.status()["airflow"]["pid"] is None


DAG_ID = "marketplace_ingest_daily"
BAD_INPUT = "/nowhere/invoices-2011.csv.gz"


def _ui_trigger_and_backfill(runtime, client: AirflowClient, start: dt.date, end: dt.date) -> dict:
    """Trigger with the form's defaults and wait for that run; then backfill [start, end] with "All
    Runs" and wait for the backfill. Screenshots of both forms are kept. Returns the manual run."""
    from tests.support.browser import (
        SHOTS,
        fill_backfill,
        logged_in_browser,
        open_trigger_dialog,
        submit_and_wait_closed,
    )

    earlier = {r["dag_run_id"] for r in client.dag_runs(DAG_ID, start, end)}
    backfills = {b["id"] for b in client.backfills(DAG_ID)}
    with logged_in_browser(runtime) as (driver, wait):
        open_trigger_dialog(driver, wait, runtime.airflow_url, DAG_ID)
        driver.save_screenshot(str(SHOTS / "trigger-form.png"))
        submit_and_wait_closed(driver, wait, "Trigger")  # enabled on the untouched form
        runs = client.wait_for_runs(DAG_ID, start, end, expected=len(earlier) + 1)
        manual = [r for r in runs if r["dag_run_id"] not in earlier]
        assert len(manual) == 1 and manual[0]["run_type"] == "manual", runs
        assert manual[0]["state"] == "success", manual
        # "Trigger" processes the last complete day (the data interval before its logical date).
        assert str(manual[0]["data_interval_start"])[:10] == end.isoformat()

        open_trigger_dialog(driver, wait, runtime.airflow_url, DAG_ID)
        fill_backfill(driver, wait, start, end, "completed")
        driver.save_screenshot(str(SHOTS / "backfill-form.png"))
        submit_and_wait_closed(driver, wait, "Run Backfill")
    created = [b for b in client.backfills(DAG_ID) if b["id"] not in backfills]
    assert len(created) == 1 and created[0]["reprocess_behavior"] == "completed", created
    client.wait_for_backfill(int(created[0]["id"]))
    return manual[0]


def _ui_trigger_bad_input(runtime, client: AirflowClient) -> dict:
    """Trigger an Online Retail run whose input_path does not exist; returns the finished run."""
    from include.preference.dag_policy import SOURCE_LABELS
    from tests.support.browser import choose, logged_in_browser, open_trigger_dialog, submit_and_wait_closed

    today = dt.datetime.now(dt.UTC).date()
    before = {r["dag_run_id"] for r in client.dag_runs(DAG_ID, today - dt.timedelta(days=7), today)}
    with logged_in_browser(runtime) as (driver, wait):
        open_trigger_dialog(driver, wait, runtime.airflow_url, DAG_ID)
        choose(driver, wait, "source", "online_retail", SOURCE_LABELS["online_retail"])
        driver.find_element("id", "element_input_path").send_keys(BAD_INPUT)
        submit_and_wait_closed(driver, wait, "Trigger")
    runs = client.wait_for_runs(DAG_ID, today - dt.timedelta(days=7), today, expected=len(before) + 1)
    new = [r for r in runs if r["dag_run_id"] not in before]
    assert len(new) == 1, runs
    return new[0]


def test_the_projects_own_postgresql_and_redis_require_their_passwords_and_keep_data_across_restarts():
    import shutil
    import tempfile

    import psycopg
    import redis

    from include.preference.services import conninfo, ensure_database

    home = Path(tempfile.mkdtemp(prefix="preference-own-servers-"))
    home.chmod(0o755)  # under root PostgreSQL runs as user postgres, which must reach its directory
    runtime = ephemeral_runtime(home, profile="production")
    manager = ServiceManager(runtime)
    assert runtime.services[:2] == ("postgres", "redis")
    try:
        manager.start("postgres")
        manager.start("redis")
        assert ensure_database(runtime.airflow_database_url) is True
        with psycopg.connect(conninfo(runtime.airflow_database_url)) as conn:
            conn.execute("CREATE TABLE kept (n int)")
        with pytest.raises(psycopg.OperationalError, match="password authentication failed"):
            psycopg.connect(
                host="127.0.0.1", port=runtime.ports.postgres, user="postgres", password=runtime.database_password + "x"
            ).close()
        with pytest.raises(redis.exceptions.AuthenticationError):
            redis.Redis(host="127.0.0.1", port=runtime.ports.redis).ping()
        assert redis.Redis.from_url(runtime.celery_broker_url).ping()

        pids = {name: manager.pid(name) for name in ("postgres", "redis")}
        assert all(manager.stop(name) for name in pids)
        assert not any(Path(f"/proc/{pid}").exists() for pid in pids.values())
        for port in (runtime.ports.postgres, runtime.ports.redis):
            with pytest.raises(OSError):
                socket.create_connection(("127.0.0.1", port), timeout=2).close()
        manager.start("postgres")  # the same cluster, not a new one
        assert ensure_database(runtime.airflow_database_url) is False
        with psycopg.connect(conninfo(runtime.airflow_database_url)) as conn:
            assert conn.execute("SELECT count(*) FROM kept").fetchone() == (0,)
    finally:
        manager.down()
        shutil.rmtree(home, ignore_errors=True)


def test_servers_named_by_url_are_used_and_not_started(tmp_path: Path):
    from include.preference.services import runtime_from_env

    own = runtime_from_env(tmp_path, env={"PREFERENCE_PROFILE": "production"})
    assert own.services[:2] == ("postgres", "redis") and own.owns_postgres and own.owns_redis
    assert f":{own.database_password}@127.0.0.1:5432/airflow" in own.airflow_database_url
    theirs = runtime_from_env(
        tmp_path,
        env={
            "PREFERENCE_PROFILE": "production",
            "PREFERENCE_AIRFLOW_DATABASE_URL": "postgresql+psycopg2://u@db.example:5432/af",
            "PREFERENCE_MLFLOW_DATABASE_URL": "postgresql+psycopg2://u@db.example:5432/ml",
            "PREFERENCE_CELERY_BROKER_URL": "redis://broker.example:6379/0",
        },
    )
    assert "postgres" not in theirs.services and "redis" not in theirs.services
    assert theirs.airflow_database_url.endswith("@db.example:5432/af")
    assert theirs.celery_broker_url == "redis://broker.example:6379/0"
    # The generated passwords are kept with the other generated keys, readable by this user alone.
    generated = (tmp_path / "generated.env").read_text()
    assert f"PREFERENCE_POSTGRES_PASSWORD={own.database_password}" in generated
