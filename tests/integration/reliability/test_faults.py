"""Faults injected into real processes, killed by PID: what survives and what a retry restores.

Each test records a figure (fault, injections, retries taken, rows lost) in
``.local/test-artifacts/faults.json`` and prints it.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest

pytestmark = [pytest.mark.integration, pytest.mark.slow]

FIGURES: list[dict[str, Any]] = []
DAY = dt.date(2025, 5, 6)
GENERATOR = {"customers": 80, "products": 30, "sessions_per_day": 40}
TABLES = ("events", "orders", "products", "customers", "reviews")


@pytest.fixture(scope="module", autouse=True)
def figures() -> Any:
    yield FIGURES
    from include.preference.config import PROJECT_ROOT

    out = PROJECT_ROOT / ".local" / "test-artifacts"
    out.mkdir(parents=True, exist_ok=True)
    (out / "faults.json").write_text(json.dumps(FIGURES, indent=2))
    for figure in FIGURES:
        print(f"fault figure: {figure}")


def _record(fault: str, injected: int, retries: int, rows_expected: int, rows_found: int) -> None:
    FIGURES.append(
        {
            "fault": fault,
            "faults_injected": injected,
            "retries_taken": retries,
            "rows_expected": rows_expected,
            "rows_lost": rows_expected - rows_found,
        }
    )


# A task process that kills the S3 server (SIGKILL, by PID) right after the first data file of
# a partition reached it: the manifest of that partition, and everything after, never gets there.
KILL_S3_MID_PUBLISH = textwrap.dedent(
    """
    import datetime as dt, json, os, signal, sys
    from include.preference import tasks
    from include.preference.storage import s3

    s3_pid, day, generator = int(sys.argv[1]), dt.date.fromisoformat(sys.argv[2]), json.loads(sys.argv[3])
    original = s3.ObjectStore.put_bytes
    killed = []

    def put_bytes(self, key, body, *args, **kwargs):
        original(self, key, body, *args, **kwargs)
        if not killed and "/v-" in key:
            killed.append(key)
            os.killpg(s3_pid, signal.SIGKILL)
            print("killed S3 after", key, flush=True)

    s3.ObjectStore.put_bytes = put_bytes
    tasks.land_raw_data(day, run_id="attempt-1", generator=generator)
    """
)


def test_s3_killed_mid_publish_the_task_fails_then_a_retry_equals_a_clean_run(tmp_path: Path, monkeypatch):
    from include.preference import tasks
    from include.preference.services import ServiceManager, ephemeral_runtime
    from include.preference.storage import ObjectStore, list_partitions, read_manifest, read_table
    from include.preference.storage.partitions import PartitionRef
    from tests.conftest import make_store

    runtime = ephemeral_runtime(tmp_path / "services")
    manager = ServiceManager(runtime)
    manager.start("s3")
    try:
        faulty = make_store(runtime)
        clean = make_store(runtime)
        env = {**os.environ, **runtime.client_env(), "PREFERENCE_BUCKET": faulty.bucket}
        env["PREFERENCE_LOCAL_DIR"] = str(tmp_path / "local")
        pid = manager.pid("s3")
        assert pid is not None
        attempt = subprocess.run(
            [sys.executable, "-c", KILL_S3_MID_PUBLISH, str(pid), DAY.isoformat(), json.dumps(GENERATOR)],
            env=env,
            capture_output=True,
            text=True,
            timeout=600,
        )
        assert attempt.returncode != 0, "the task must fail while S3 is down"
        assert "killed S3 after raw/" in attempt.stdout, attempt.stdout + attempt.stderr
        manager.stop("s3")  # reaps the killed server

        manager.start("s3")  # the same data directory: what was uploaded before the kill is there
        faulty = ObjectStore(faulty.settings)
        half_written = [t for t in TABLES if any(faulty.list_keys(PartitionRef("raw", t, DAY).prefix))]
        assert half_written, "files were uploaded before the kill"
        # Nothing partial is visible: no partition has a manifest yet, so none is listed or readable.
        assert all(list_partitions(faulty, "raw", t) == [] for t in TABLES)

        # The retry (what Airflow runs next) and a clean run of the same date in another bucket.
        for key, value in runtime.client_env().items():
            monkeypatch.setenv(key, value)
        monkeypatch.setenv("PREFERENCE_LOCAL_DIR", str(tmp_path / "local"))
        monkeypatch.setenv("PREFERENCE_BUCKET", faulty.bucket)
        tasks.land_raw_data(DAY, run_id="attempt-2", generator=GENERATOR)
        monkeypatch.setenv("PREFERENCE_BUCKET", clean.bucket)
        tasks.land_raw_data(DAY, run_id="clean", generator=GENERATOR)

        expected = found = 0
        for table in TABLES:
            ref = PartitionRef("raw", table, DAY)
            after, reference = read_manifest(faulty, ref), read_manifest(clean, ref)
            assert after is not None and reference is not None
            assert after.version == reference.version, table  # same content digest
            assert read_table(faulty, ref).equals(read_table(clean, ref))
            expected += reference.row_count or 0
            found += after.row_count or 0
            # The retry's publish removed what the killed attempt left behind.
            assert sorted(faulty.list_keys(ref.prefix)) == sorted(
                [ref.manifest_key] + [ref.prefix + f.path for f in after.files]
            )
        assert found == expected > 0
        _record("S3 server killed mid-publish (land_raw_data)", 1, 1, expected, found)
    finally:
        manager.stop("s3")


# A Spark stage whose task fails on its first attempt (a worker error), run with the project's
# session; prints the rows as JSON.
FLAKY_STAGE = textwrap.dedent(
    """
    import json, sys
    import numpy as np
    from pyspark import TaskContext
    from include.preference.segments.jobs import assignment_batches
    from include.preference.spark import spark_session

    master = sys.argv[1] or None
    spark = spark_session("flaky", master)
    rng = np.random.default_rng(3)
    points = rng.normal(size=(400, 16)).astype("float32")
    centroids = rng.normal(size=(5, 16)).astype("float32")
    frame = spark.createDataFrame(
        [(f"C{i:04d}", p.tolist()) for i, p in enumerate(points)], "customer_id string, embedding array<float>"
    ).repartition(4)
    assign = assignment_batches(centroids, np.arange(5), "customer_id", {})

    def flaky(batches):
        context = TaskContext.get()
        if context.partitionId() == 1 and context.attemptNumber() == 0:
            raise RuntimeError("injected: the first attempt of partition 1 fails")
        yield from assign(batches)

    rows = frame.mapInArrow(flaky, "customer_id string, cluster_id long, l1_distance float").collect()
    print("ROWS" + json.dumps(sorted((r.customer_id, r.cluster_id) for r in rows)))
    """
)


def test_a_spark_task_failing_once_is_retried_and_the_output_is_complete():
    import numpy as np

    from include.preference.segments.assign import nearest_l1_broadcast, segment_space

    def run(master: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-c", FLAKY_STAGE, master], capture_output=True, text=True, timeout=600, env=os.environ
        )

    default = run("")  # the project's default master: local[*,4] (a task may fail 3 times)
    assert default.returncode == 0, default.stderr[-3000:]
    rows = json.loads(default.stdout.split("ROWS", 1)[1])
    rng = np.random.default_rng(3)
    points = rng.normal(size=(400, 16)).astype("float32")
    centroids = rng.normal(size=(5, 16)).astype("float32")
    expected, _ = nearest_l1_broadcast(segment_space(points), centroids)
    assert [r[1] for r in rows] == expected.tolist()
    assert [r[0] for r in rows] == [f"C{i:04d}" for i in range(400)]
    assert "injected: the first attempt of partition 1 fails" in default.stderr  # it did fail once

    no_retries = run("local[2]")  # without task retries the same stage fails the job
    assert no_retries.returncode != 0 and "injected" in no_retries.stderr
    _record("Spark task fails on its first attempt", 1, 1, 400, len(rows))


# A training task's registration: the model version is created, then the MLflow server is killed
# (SIGKILL, by PID) before the run is tagged and finished.
KILL_MLFLOW_AFTER_REGISTER = textwrap.dedent(
    """
    import os, signal, sys
    import mlflow
    import numpy as np
    from include.preference.features import spec
    from include.preference.model import build_model, feature_statistics
    from include.preference.registry import log_training

    mlflow_pid, name = int(sys.argv[1]), sys.argv[2]
    original = mlflow.register_model

    def register_model(*args, **kwargs):
        registered = original(*args, **kwargs)
        os.killpg(mlflow_pid, signal.SIGKILL)
        print("killed MLflow after registering version", registered.version, flush=True)
        return registered

    mlflow.register_model = register_model
    rng = np.random.default_rng(3)
    data = {
        f.name: rng.poisson(2.0, 32).astype("float32") if f.kind == "numeric" else np.array(["a"] * 32, dtype=object)
        for f in spec.FEATURES
    }
    model = build_model(feature_statistics(data))
    log_training(
        model, name=name, experiment=name, run_key="2025-05-06/attempt", params={}, metrics={"recall_at_k": 0.3},
        history=[], manifests={}, plots=[], input_example={k: v[:2].tolist() for k, v in data.items()}, tags={},
    )
    """
)


def test_mlflow_killed_during_registration_a_retry_leaves_one_run_and_one_version(tmp_path: Path, monkeypatch):
    import mlflow
    import numpy as np
    from mlflow.tracking import MlflowClient

    from include.preference.features import spec
    from include.preference.model import build_model, feature_statistics
    from include.preference.registry import CHALLENGER, log_training
    from include.preference.services import ServiceManager, ephemeral_runtime

    runtime = ephemeral_runtime(tmp_path / "services")
    manager = ServiceManager(runtime)
    manager.up(("s3", "mlflow"))
    name = "fault-registration"
    previous_uri = mlflow.get_tracking_uri()
    try:
        env = {**os.environ, **runtime.client_env(), "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0"}
        pid = manager.pid("mlflow")
        assert pid is not None
        attempt = subprocess.run(
            [sys.executable, "-c", KILL_MLFLOW_AFTER_REGISTER, str(pid), name],
            env=env,
            capture_output=True,
            text=True,
            timeout=600,
        )
        assert attempt.returncode != 0, "registration must fail while MLflow is down"
        assert "killed MLflow after registering version 1" in attempt.stdout, attempt.stdout + attempt.stderr[-2000:]
        manager.stop("mlflow")  # reaps the killed server
        manager.start("mlflow")  # same backend store: the interrupted run and version 1 are there

        for key, value in runtime.client_env().items():
            monkeypatch.setenv(key, value)
        # An earlier test in this process may have set a tracking URI, which wins over the variable.
        mlflow.set_tracking_uri(runtime.mlflow_uri)
        client = MlflowClient()
        experiment = client.get_experiment_by_name(name)
        ghosts = client.search_runs([experiment.experiment_id], filter_string="tags.run_key = '2025-05-06/attempt'")
        assert len(ghosts) == 1 and ghosts[0].info.status != "FINISHED"
        assert [v.version for v in client.search_model_versions(f"name = '{name}'")] == ["1"]

        rng = np.random.default_rng(3)
        data = {
            f.name: rng.poisson(2.0, 32).astype("float32")
            if f.kind == "numeric"
            else np.array(["a"] * 32, dtype=object)
            for f in spec.FEATURES
        }
        logged = log_training(  # the retry: same run key
            build_model(feature_statistics(data)),
            name=name,
            experiment=name,
            run_key="2025-05-06/attempt",
            params={},
            metrics={"recall_at_k": 0.3},
            history=[],
            manifests={},
            plots=[],
            input_example={k: v[:2].tolist() for k, v in data.items()},
            tags={},
        )
        runs = client.search_runs([experiment.experiment_id], filter_string="tags.run_key = '2025-05-06/attempt'")
        assert [r.info.run_id for r in runs] == [logged.run_id] and runs[0].info.status == "FINISHED"
        versions = client.search_model_versions(f"name = '{name}'")
        assert [(v.version, v.run_id) for v in versions] == [(logged.version, logged.run_id)]
        assert client.get_model_version_by_alias(name, CHALLENGER).version == logged.version
        assert client.get_run(ghosts[0].info.run_id).info.lifecycle_stage == "deleted"
        _record("MLflow server killed during registration", 1, 1, 1, len(versions))
    finally:
        mlflow.set_tracking_uri(previous_uri)
        manager.down(("s3", "mlflow"))
