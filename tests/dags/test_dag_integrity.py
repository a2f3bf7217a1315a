"""Every DAG imports cleanly, follows the house policy, and is cheap and offline at parse time."""

from __future__ import annotations

import datetime as dt
import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.unit

DAGS_FOLDER = Path(__file__).resolve().parents[2] / "dags"
DAG_FILES = sorted(p for p in DAGS_FOLDER.glob("*.py") if not p.name.startswith("_"))
HEAVY_MODULES = (
    "tensorflow",
    "keras",
    "pyspark",
    "mlflow",
    "boto3",
    "botocore",
    "great_expectations",
    "sklearn",
    "pyarrow",
    "include.preference.storage",
    "include.preference.sources",
)
PARSE_BUDGET_SECONDS = 1.0


@pytest.fixture(scope="module")
def dag_bag():
    from airflow.dag_processing.dagbag import DagBag

    return DagBag(dag_folder=str(DAGS_FOLDER))  # examples are off via AIRFLOW__CORE__LOAD_EXAMPLES


def test_dag_files_exist():
    assert DAG_FILES, "no DAG files found"


def test_no_import_errors(dag_bag):
    assert dag_bag.import_errors == {}
    assert len(dag_bag.dags) == len(DAG_FILES)


def test_dag_id_equals_file_name(dag_bag):
    for dag_id, dag in dag_bag.dags.items():
        assert Path(dag.fileloc).stem == dag_id


def test_policy_holds_for_every_dag(dag_bag):
    for dag_id, dag in dag_bag.dags.items():
        assert dag.tags, f"{dag_id}: tags"
        assert dag.doc_md and dag.doc_md.strip().startswith("##"), f"{dag_id}: Markdown doc_md"
        assert dag.catchup is False, f"{dag_id}: catchup must be explicit and off"
        assert dag.max_active_runs and dag.max_active_runs <= 8, f"{dag_id}: max_active_runs"
        assert dag.start_date is not None and dag.start_date.utcoffset() == dt.timedelta(0), f"{dag_id}: UTC start"
        assert dag.start_date < dt.datetime(2026, 1, 1, tzinfo=dt.UTC), f"{dag_id}: fixed, past start_date"
        for task in dag.tasks:
            where = f"{dag_id}.{task.task_id}"
            assert task.owner not in ("", "airflow"), f"{where}: owner"
            assert task.retries >= 2, f"{where}: retries"
            assert task.retry_exponential_backoff and task.retry_exponential_backoff > 1, f"{where}: backoff"
            assert task.retry_delay > dt.timedelta(0) and task.max_retry_delay, f"{where}: retry delays"
            assert task.execution_timeout is not None, f"{where}: execution_timeout"
            assert task.retry_policy is not None, f"{where}: retry_policy"


def test_wrong_credentials_fail_fast_and_transient_errors_retry(dag_bag):
    from airflow.sdk import RetryAction

    from include.preference.config import ConfigError
    from include.preference.storage import StorageAuthError, StorageError

    for dag in dag_bag.dags.values():
        for task in dag.tasks:
            policy = task.retry_policy
            for error in (StorageAuthError("bad keys"), ConfigError("no keys")):
                assert policy.evaluate(error, try_number=1, max_tries=4).action is RetryAction.FAIL
            transient = policy.evaluate(StorageError("connection reset"), try_number=1, max_tries=4)
            assert transient.action is RetryAction.DEFAULT


def test_params_explain_themselves(dag_bag):
    for dag_id, dag in dag_bag.dags.items():
        for name, param in dag.params.items():
            schema = param.schema if hasattr(param, "schema") else dag.params.get_param(name).schema
            assert schema.get("type"), f"{dag_id}.{name}: type"
            assert schema.get("description") or param.description, f"{dag_id}.{name}: description"


def test_every_dag_triggers_with_its_default_params(dag_bag):
    # The UI's trigger form treats a blank ("" or null) field whose type does not allow null as a
    # required field left empty and disables "Trigger" and "Run Backfill".
    for dag_id, dag in dag_bag.dags.items():
        dag.params.validate()  # raises on a default that breaks its own schema
        for name in dag.params:
            default = dag.params[name]
            types = dag.params.get_param(name).schema.get("type")
            if default in (None, ""):
                assert default is None and "null" in types, f"{dag_id}.{name}: optional, so null by default"


def test_tasks_that_read_the_previous_days_outputs_wait_for_it(dag_bag):
    # Concurrent backfill runs must produce what the days run one by one produce.
    dag = dag_bag.dags["marketplace_ingest_daily"]
    ordered = {t.task_id for t in dag.tasks if t.depends_on_past}
    # build_training_data: train_model reads every earlier anchor's examples, so a day's examples
    # wait for the day before's (else a run's training set depends on which run got there first).
    assert ordered == {"build_features", "build_training_data", "embed_reviews", "refresh_segments", "assign_segments"}


def test_generator_params_default_to_the_deployment_settings(dag_bag):
    params = dag_bag.dags["marketplace_ingest_daily"].params
    for name in ("seed", "customers", "products", "sessions_per_day"):
        assert params[name] is None, name  # null: PREFERENCE_SYNTH_* decides
        assert "null" in params.get_param(name).schema["type"], name


PROBE = r"""
import json, socket, sys, time
import airflow.sdk  # the cost of Airflow itself is not the DAG's
from airflow.sdk import BaseHook, Variable

def refuse(*args, **kwargs):
    raise RuntimeError("network access at DAG parse time")

socket.socket.connect = refuse
socket.create_connection = refuse
BaseHook.get_connection = classmethod(lambda cls, *a, **k: refuse())
Variable.get = staticmethod(refuse)
before = set(sys.modules)
start = time.perf_counter()
import runpy
runpy.run_path(sys.argv[1])
elapsed = time.perf_counter() - start
print(json.dumps({"seconds": elapsed, "new_modules": sorted(set(sys.modules) - before)}))
"""


@pytest.mark.parametrize("dag_file", DAG_FILES, ids=lambda p: p.name)
def test_parsing_is_cheap_offline_and_imports_nothing_heavy(dag_file: Path):
    env_free = {k: v for k, v in __import__("os").environ.items() if not k.startswith(("AIRFLOW_CONN_", "AWS_"))}
    result = subprocess.run(
        [sys.executable, "-c", PROBE, str(dag_file)],
        capture_output=True,
        text=True,
        env=env_free,
        timeout=120,
        cwd=DAGS_FOLDER.parent,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    report = json.loads(result.stdout.strip().splitlines()[-1])
    heavy = [m for m in report["new_modules"] if m.split(".")[0] in HEAVY_MODULES or m.startswith(HEAVY_MODULES)]
    assert heavy == [], f"{dag_file.name} imports at parse time: {heavy[:10]}"
    assert report["seconds"] < PARSE_BUDGET_SECONDS, f"{dag_file.name} parsed in {report['seconds']:.2f}s"
