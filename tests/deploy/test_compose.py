"""Static checks of the production shape (no Docker engine here): compose file, image, settings."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
SERVICES = COMPOSE["services"]
ONE_SHOT = {"airflow-init"}


def env_example_names() -> set[str]:
    names = set()
    for line in (ROOT / ".env.example").read_text().splitlines():
        match = re.match(r"^([A-Z][A-Z0-9_]*)=", line)
        if match:
            names.add(match.group(1))
    return names


def command_words(service: dict) -> list[str]:
    command = service.get("command", [])
    return command.split() if isinstance(command, str) else [str(w) for w in command]


def test_every_service_has_an_image_or_a_build_and_a_healthcheck():
    for name, service in SERVICES.items():
        assert service.get("image") or service.get("build"), f"{name}: image or build"
        if name not in ONE_SHOT:
            assert service.get("healthcheck", {}).get("test"), f"{name}: healthcheck"


def test_the_production_shape_is_complete():
    for required in (
        "postgres",
        "redis",
        "seaweedfs",
        "mlflow",
        "airflow-apiserver",
        "airflow-scheduler",
        "airflow-dag-processor",
        "airflow-triggerer",
        "spark-master",
        "spark-worker",
    ):
        assert required in SERVICES, required
    for name in ("airflow-apiserver", "airflow-scheduler", "airflow-dag-processor", "airflow-triggerer"):
        assert command_words(SERVICES[name])[:2] == [
            "airflow",
            name.removeprefix("airflow-").replace("apiserver", "api-server"),
        ]
    env = SERVICES["airflow-scheduler"]["environment"]
    assert env["AIRFLOW__CORE__EXECUTOR"] == "CeleryExecutor"
    assert env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"].startswith("postgresql+psycopg2://")
    assert env["AIRFLOW__CELERY__BROKER_URL"].startswith("redis://redis:")
    assert "postgresql+psycopg2://" in " ".join(command_words(SERVICES["mlflow"]))
    assert "--artifacts-destination" in command_words(SERVICES["mlflow"])


def test_celery_workers_cover_the_default_and_gpu_queues():
    queues = {}
    for name, service in SERVICES.items():
        words = command_words(service)
        if words[:3] == ["airflow", "celery", "worker"]:
            queues[words[words.index("--queues") + 1]] = name
    # Spark work runs on the Spark cluster: the tasks that drive it need no queue of their own.
    assert set(queues) == {"default", "gpu"}
    gpu = SERVICES[queues["gpu"]]
    devices = gpu["deploy"]["resources"]["reservations"]["devices"]
    assert any(d["driver"] == "nvidia" and "gpu" in d["capabilities"] for d in devices)
    assert gpu["build"]["target"] == "gpu"
    init = " ".join(command_words(SERVICES["airflow-init"]))
    assert "airflow pools set gpu" in init and "airflow db migrate" in init


def test_include_is_mounted_and_importable_in_airflow_containers():
    for name, service in SERVICES.items():
        if command_words(service)[:1] == ["airflow"] or name == "airflow-init":
            mounts = {v.split(":")[1] for v in service["volumes"] if v.startswith("./")}
            assert {"/opt/airflow/dags", "/opt/airflow/include", "/opt/airflow/plugins"} <= mounts, name
    dockerfile = (ROOT / "docker" / "Dockerfile").read_text()
    assert "PYTHONPATH=/opt/airflow" in dockerfile and "COPY include ./include" in dockerfile


def test_spark_workers_run_the_airflow_code_and_share_no_disk_with_anyone():
    code = {"/opt/airflow/dags", "/opt/airflow/include", "/opt/airflow/plugins"}
    spark = {name: s for name, s in SERVICES.items() if name.startswith("spark-worker")}
    assert set(spark) == {"spark-worker", "spark-worker-gpu"}
    for name, service in spark.items():
        mounts = {v.split(":")[1] for v in service["volumes"] if v.startswith("./")}
        assert code <= mounts, name
        assert service["environment"]["SPARK_LOCAL_DIRS"].startswith("/tmp/"), name
    # Named volumes: each belongs to one kind of service (logs are written by Airflow alone).
    users: dict[str, set[str]] = {}
    for name, service in SERVICES.items():
        for volume in service.get("volumes", []):
            if not volume.startswith("./"):
                users.setdefault(volume.split(":")[0], set()).add(name)
    assert not any(name.startswith("spark-") for volume in users.values() for name in volume)
    gpu = SERVICES["spark-worker-gpu"]
    assert "spark.worker.resource.gpu.discoveryScript" in gpu["environment"]["SPARK_WORKER_OPTS"]
    assert any(d["driver"] == "nvidia" for d in gpu["deploy"]["resources"]["reservations"]["devices"])
    assert SERVICES["airflow-worker-gpu"]["environment"]["PREFERENCE_SPARK_TASK_GPUS"] == "1"
    lock = SERVICES["airflow-scheduler"]["environment"]["PREFERENCE_LOCK_DATABASE_URL"]
    assert lock.startswith("postgresql+psycopg2://") and lock.endswith("/mlflow")


def test_volumes_bind_mounts_and_dependencies_resolve():
    declared = set(COMPOSE.get("volumes", {}))
    for name, service in SERVICES.items():
        for volume in service.get("volumes", []):
            source = volume.split(":")[0]
            if source.startswith("./"):
                assert (ROOT / source).exists(), f"{name}: {source} missing"
            else:
                assert source in declared, f"{name}: named volume {source} not declared"
        for dependency, rule in (service.get("depends_on") or {}).items():
            assert dependency in SERVICES, f"{name} depends on unknown {dependency}"
            if rule["condition"] == "service_healthy":
                assert SERVICES[dependency].get("healthcheck"), f"{name}: {dependency} has no healthcheck"


def test_every_variable_the_compose_file_references_is_in_env_example():
    text = (ROOT / "docker-compose.yml").read_text()
    referenced = set(re.findall(r"(?<!\$)\$\{([A-Z][A-Z0-9_]*)", text))
    assert referenced, "the compose file should be configured from the environment"
    assert referenced - env_example_names() == set()


def test_every_variable_the_code_reads_is_in_env_example():
    read: set[str] = set()
    for path in (ROOT / "include").rglob("*.py"):
        source = path.read_text()
        read |= set(re.findall(r"""(?:\.get\(|\[)\s*["']([A-Z][A-Z0-9]*_[A-Z0-9_]+)["']""", source))
    from include.preference.sources.synthetic import SyntheticConfig

    read |= {f"PREFERENCE_SYNTH_{f.upper()}" for f in SyntheticConfig.__dataclass_fields__}
    read -= {"PATH", "PYTHONPATH", "HOME"}
    read -= {"TF_CONFIG", "CUDA_VISIBLE_DEVICES"}  # set per training worker by the launcher, not settings
    assert "AWS_SECRET_ACCESS_KEY" in read and "PREFERENCE_BUCKET" in read  # the scan works
    assert read - env_example_names() == set()


def test_no_secret_values_and_no_runtime_pip_installs():
    for name, value in (
        line.split("=", 1) for line in (ROOT / ".env.example").read_text().splitlines() if re.match(r"^[A-Z]", line)
    ):
        if any(word in name for word in ("SECRET", "PASSWORD", "FERNET", "JWT")):
            assert value == "", f".env.example must not carry a value for {name}"
    for path in (ROOT / "docker-compose.yml", ROOT / "docker" / "Dockerfile"):
        assert "_PIP_ADDITIONAL_REQUIREMENTS" not in path.read_text()
    dockerfile = (ROOT / "docker" / "Dockerfile").read_text()
    assert "pip install -r requirements.txt" in dockerfile


def test_runtime_requirements_are_all_pinned():
    text = (ROOT / "requirements.txt").read_text()
    lines = [line.strip() for line in text.splitlines() if line.strip() and not line.startswith("#")]
    assert len(lines) > 50
    unpinned = [line for line in lines if not re.match(r"^[A-Za-z0-9_.\-\[\]]+==[A-Za-z0-9_.+\-]+$", line)]
    assert unpinned == []
    pins = dict(line.split("==") for line in lines)
    assert pins["pyspark"] == "4.2.0" and pins["apache-airflow"] == "3.3.2"
