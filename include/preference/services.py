"""The local runtimes, on 127.0.0.1: SeaweedFS (S3), an MLflow server and Airflow (and PostgreSQL and Redis).

Two profiles run the same DAGs and code; only configuration differs:

* ``embedded`` (the default): Airflow standalone on SQLite with the LocalExecutor, MLflow on SQLite;
* ``production``: Airflow's API server, scheduler, DAG processor and triggerer on PostgreSQL with the
  CeleryExecutor and Redis as broker, one Celery worker for the ``default`` queue and one for
  ``gpu`` (the training task's queue), MLflow on PostgreSQL, and a Spark standalone cluster (a
  master and two workers, pyspark's own ``spark-class``) that every task's Spark job runs on, in
  client mode (the task is the driver). The project runs its own PostgreSQL and
  Redis (see :mod:`include.preference.servers`) unless ``PREFERENCE_AIRFLOW_DATABASE_URL``,
  ``PREFERENCE_MLFLOW_DATABASE_URL`` and ``PREFERENCE_CELERY_BROKER_URL`` name servers of their own;
  databases are created when missing.

Each service runs as its own process group, with its data under ``<home>/<service>/``, its log in
``<home>/logs/`` and its PID in ``<home>/run/``. A runtime with ``isolated`` set (the tests) runs the
Spark workers and the Celery workers each in a mount namespace of its own, with an empty tmpfs over
the other ones' private folders (``<home>/<service>/private``: temporary files, scratch, Spark's
local directories and the service's home directory): like separate hosts, they share S3, the
databases and the broker, and no disk. Start-up waits for a health check; stop signals the
whole process group by PID (TERM, then KILL). The same code starts the services for ``make up`` and
for the integration tests (another home, free ports).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import secrets
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from include.preference import servers
from include.preference.config import DEFAULT_BUCKET, DEFAULT_REGION, PROJECT_ROOT

log = logging.getLogger(__name__)

HOST = servers.HOST  # every service listens on the loopback address only
SERVICES = ("s3", "mlflow", "airflow")
PROFILES = ("embedded", "production")
# Celery workers of the production profile: queue -> concurrency (one task at a time per GPU).
WORKER_QUEUES = {"default": 2, "gpu": 1}
# PostgreSQL and Redis come first, and only where the runtime runs its own (see Runtime.services).
SPARK_WORKERS = 2
PRODUCTION_SERVICES = (
    "postgres",
    "redis",
    "s3",
    "mlflow",
    "spark-master",
    *(f"spark-worker-{i}" for i in range(1, SPARK_WORKERS + 1)),
    "api-server",
    "scheduler",
    "dag-processor",
    "triggerer",
    *(f"worker-{queue}" for queue in WORKER_QUEUES),
)
# Airflow components of the production profile and the health endpoint's name for each.
AIRFLOW_COMPONENTS = {"scheduler": "scheduler", "dag-processor": "dag_processor", "triggerer": "triggerer"}
# Processes that behave as separate hosts in an isolated runtime (see the module docstring).
ISOLATED_SERVICES = (
    *(f"spark-worker-{i}" for i in range(1, SPARK_WORKERS + 1)),
    *(f"worker-{q}" for q in WORKER_QUEUES),
)
# The databases on the project's own PostgreSQL server.
AIRFLOW_DATABASE = "airflow"
MLFLOW_DATABASE = "mlflow"
GENERATED_ENV = "generated.env"
ADMIN_USER = "admin"


class ServiceError(servers.ServerSetupError):
    """A service did not start, or is not healthy; the message points at its log."""


def _port_is_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((HOST, port))
        except OSError:
            return False
    return True


def free_port(pair_offset: int | None = None, taken: set[int] | None = None) -> int:
    """A free TCP port on 127.0.0.1; with ``pair_offset``, ``port + pair_offset`` is free too."""
    taken = taken if taken is not None else set()
    for _ in range(200):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
            probe.bind((HOST, 0))
            port = int(probe.getsockname()[1])
        if pair_offset is not None and (port + pair_offset > 65535 or not _port_is_free(port + pair_offset)):
            continue
        if port in taken or (pair_offset is not None and port + pair_offset in taken):
            continue
        taken.update({port} | ({port + pair_offset} if pair_offset is not None else set()))
        return port
    raise ServiceError("no free port found on 127.0.0.1")


@dataclass(frozen=True)
class Ports:
    """Every port the embedded services listen on (SeaweedFS adds 10000 for each gRPC port)."""

    s3: int = 8333
    mlflow: int = 5000
    airflow: int = 8080
    weed_master: int = 9333
    weed_volume: int = 18080
    weed_filer: int = 8888
    weed_admin: int = 23646
    postgres: int = 5432
    redis: int = 6379
    spark_master: int = 7077
    spark_master_ui: int = 8081
    spark_worker_ui: tuple[int, ...] = (8082, 8083)

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> "Ports":
        defaults = cls()
        return cls(
            s3=int(env.get("S3_PORT", defaults.s3)),
            mlflow=int(env.get("MLFLOW_PORT", defaults.mlflow)),
            airflow=int(env.get("AIRFLOW_PORT", defaults.airflow)),
            postgres=int(env.get("POSTGRES_PORT", defaults.postgres)),
            redis=int(env.get("REDIS_PORT", defaults.redis)),
            spark_master=int(env.get("SPARK_MASTER_PORT", defaults.spark_master)),
            spark_master_ui=int(env.get("SPARK_MASTER_UI_PORT", defaults.spark_master_ui)),
        )

    @classmethod
    def free(cls) -> "Ports":
        """Fresh free ports, for tests running beside anything else on this machine."""
        taken: set[int] = set()
        weed = {
            name: free_port(10000, taken) for name in ("s3", "weed_master", "weed_volume", "weed_filer", "weed_admin")
        }
        single = {
            name: free_port(None, taken)
            for name in ("mlflow", "airflow", "postgres", "redis", "spark_master", "spark_master_ui")
        }
        workers = tuple(free_port(None, taken) for _ in range(SPARK_WORKERS))
        return cls(**single, **weed, spark_worker_ui=workers)


@dataclass(frozen=True)
class Runtime:
    """Where the services live and how they are reached."""

    home: Path
    ports: Ports
    access_key_id: str
    secret_access_key: str = field(repr=False)
    admin_password: str = field(repr=False)
    bucket: str = DEFAULT_BUCKET
    dags_folder: Path = PROJECT_ROOT / "dags"
    plugins_folder: Path = PROJECT_ROOT / "plugins"
    profile: str = "embedded"
    # Passwords of the project's own PostgreSQL (user postgres) and Redis.
    database_password: str = field(default="", repr=False)
    broker_password: str = field(default="", repr=False)
    # Servers of someone else's: when set, the project starts no PostgreSQL (both set) or Redis.
    external_airflow_database_url: str = field(default="", repr=False)
    external_mlflow_database_url: str = field(default="", repr=False)
    external_celery_broker_url: str = field(default="", repr=False)
    # A throwaway runtime (tests, benchmarks): its PostgreSQL skips fsync.
    durable: bool = True
    # The Spark and Celery workers in mount namespaces of their own (tests; see the module docstring).
    isolated: bool = False
    # Cores and memory each Spark worker offers (the production profile's local cluster).
    spark_worker_cores: int = 1
    spark_worker_memory: str = "2g"

    def __post_init__(self) -> None:
        if self.profile not in PROFILES:
            raise ValueError(f"PREFERENCE_PROFILE must be one of {', '.join(PROFILES)}, got {self.profile!r}")

    @property
    def production(self) -> bool:
        return self.profile == "production"

    @property
    def owns_postgres(self) -> bool:
        return not (self.external_airflow_database_url and self.external_mlflow_database_url)

    @property
    def owns_redis(self) -> bool:
        return not self.external_celery_broker_url

    @property
    def services(self) -> tuple[str, ...]:
        """This profile's services, in start order."""
        if not self.production:
            return SERVICES
        skipped = {name for name, owned in (("postgres", self.owns_postgres), ("redis", self.owns_redis)) if not owned}
        return tuple(name for name in PRODUCTION_SERVICES if name not in skipped)

    @property
    def database_server_url(self) -> str:
        """The project's own PostgreSQL server, as a SQLAlchemy URL without a database."""
        return (
            f"postgresql+psycopg2://{servers.POSTGRES_SUPERUSER}:{self.database_password}@{HOST}:{self.ports.postgres}"
        )

    @property
    def airflow_database_url(self) -> str:
        return self.external_airflow_database_url or f"{self.database_server_url}/{AIRFLOW_DATABASE}"

    @property
    def mlflow_database_url(self) -> str:
        return self.external_mlflow_database_url or f"{self.database_server_url}/{MLFLOW_DATABASE}"

    @property
    def spark_master_url(self) -> str:
        return f"spark://{HOST}:{self.ports.spark_master}"

    @property
    def celery_broker_url(self) -> str:
        return self.external_celery_broker_url or f"redis://:{self.broker_password}@{HOST}:{self.ports.redis}/0"

    @property
    def s3_endpoint(self) -> str:
        return f"http://{HOST}:{self.ports.s3}"

    @property
    def mlflow_uri(self) -> str:
        return f"http://{HOST}:{self.ports.mlflow}"

    @property
    def airflow_url(self) -> str:
        return f"http://{HOST}:{self.ports.airflow}"

    def client_env(self) -> dict[str, str]:
        """Variables a task, a CLI or a test needs to use these services."""
        connection = {
            "conn_type": "aws",
            "login": self.access_key_id,
            "password": self.secret_access_key,
            "extra": {"endpoint_url": self.s3_endpoint, "region_name": DEFAULT_REGION},
        }
        return {
            "AWS_ACCESS_KEY_ID": self.access_key_id,
            "AWS_SECRET_ACCESS_KEY": self.secret_access_key,
            "AWS_DEFAULT_REGION": DEFAULT_REGION,
            "S3_ENDPOINT_URL": self.s3_endpoint,
            "PREFERENCE_BUCKET": self.bucket,
            "AIRFLOW_CONN_AWS_DEFAULT": json.dumps(connection),
            "AIRFLOW_CONN_MLFLOW_DEFAULT": json.dumps(
                {"conn_type": "http", "host": HOST, "port": self.ports.mlflow, "schema": "http"}
            ),
            "MLFLOW_TRACKING_URI": self.mlflow_uri,
            "MLFLOW_S3_ENDPOINT_URL": self.s3_endpoint,
            "PREFERENCE_LOCAL_DIR": str(self.home),
        }

    def airflow_env(self) -> dict[str, str]:
        """Variables for every Airflow process of this profile (this project's DAGs and plugins)."""
        airflow_home = self.home / "airflow"
        env = {
            **self.client_env(),
            "AIRFLOW_HOME": str(airflow_home),
            "AIRFLOW__CORE__DAGS_FOLDER": str(self.dags_folder),
            "AIRFLOW__CORE__PLUGINS_FOLDER": str(self.plugins_folder),
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            "AIRFLOW__CORE__PARALLELISM": "4",
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": f"{ADMIN_USER}:admin",
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE": str(airflow_home / "passwords.json"),
            "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"{self.airflow_url}/execution/",
            "AIRFLOW__API__HOST": HOST,
            "AIRFLOW__API__PORT": str(self.ports.airflow),
            "AIRFLOW__API__BASE_URL": self.airflow_url,
            "AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL": "20",
            "PYTHONPATH": os.pathsep.join(filter(None, [str(PROJECT_ROOT), os.environ.get("PYTHONPATH")])),
        }
        if self.production:
            return {
                **env,
                "AIRFLOW__CORE__EXECUTOR": "CeleryExecutor",
                "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": self.airflow_database_url,
                "AIRFLOW__CELERY__BROKER_URL": self.celery_broker_url,
                "AIRFLOW__CELERY__RESULT_BACKEND": "db+" + self.airflow_database_url.replace("+psycopg2", ""),
                # One promotion lock for every host: an advisory lock on MLflow's database.
                "PREFERENCE_LOCK_DATABASE_URL": self.mlflow_database_url,
                # Every task's Spark job runs on the cluster; the task is its driver (client mode).
                "PREFERENCE_SPARK_MASTER": self.spark_master_url,
                "PREFERENCE_SPARK_DRIVER_HOST": HOST,
            }
        return {
            **env,
            "AIRFLOW__CORE__EXECUTOR": "LocalExecutor",
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{airflow_home / 'airflow.db'}",
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONNECT_ARGS": "include.preference.airflow_db.SQLITE_CONNECT_ARGS",
            "AIRFLOW__SCHEDULER__ENABLE_HEALTH_CHECK": "True",
        }


def load_env_files(home: Path, env: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment, completed by ``.env`` and by the keys generated on first use.

    Precedence: the process environment, then the project's ``.env``, then
    ``<home>/generated.env``. Missing credentials are generated there (random, never committed).
    """
    from dotenv import dotenv_values

    merged: dict[str, str] = {}
    generated_file = home / GENERATED_ENV
    for source in (generated_file, PROJECT_ROOT / ".env"):
        if source.exists():
            merged.update({k: v for k, v in dotenv_values(source).items() if v is not None})
    merged.update(os.environ if env is None else env)
    missing = {
        "AWS_ACCESS_KEY_ID": lambda: "lake" + secrets.token_hex(6),
        "AWS_SECRET_ACCESS_KEY": lambda: secrets.token_urlsafe(24),
        "AIRFLOW_ADMIN_PASSWORD": lambda: secrets.token_urlsafe(12),
        "PREFERENCE_POSTGRES_PASSWORD": lambda: secrets.token_urlsafe(18),
        "PREFERENCE_REDIS_PASSWORD": lambda: secrets.token_urlsafe(18),
    }
    new = {name: make() for name, make in missing.items() if not merged.get(name)}
    if new:
        home.mkdir(parents=True, exist_ok=True)
        with generated_file.open("a") as handle:
            handle.writelines(f"{name}={value}\n" for name, value in new.items())
        generated_file.chmod(0o600)
        merged.update(new)
    return merged


def runtime_from_env(home: Path | None = None, env: Mapping[str, str] | None = None) -> Runtime:
    """The runtime for ``make up``: home ``PREFERENCE_LOCAL_DIR`` (default ``.local``), fixed ports."""
    base = dict(os.environ if env is None else env)
    home = Path(home or base.get("PREFERENCE_LOCAL_DIR") or PROJECT_ROOT / ".local").resolve()
    values = load_env_files(home, base)
    return Runtime(
        home=home,
        ports=Ports.from_env(values),
        access_key_id=values["AWS_ACCESS_KEY_ID"],
        secret_access_key=values["AWS_SECRET_ACCESS_KEY"],
        admin_password=values["AIRFLOW_ADMIN_PASSWORD"],
        bucket=values.get("PREFERENCE_BUCKET", DEFAULT_BUCKET),
        profile=values.get("PREFERENCE_PROFILE") or "embedded",
        database_password=values["PREFERENCE_POSTGRES_PASSWORD"],
        broker_password=values["PREFERENCE_REDIS_PASSWORD"],
        external_airflow_database_url=values.get("PREFERENCE_AIRFLOW_DATABASE_URL") or "",
        external_mlflow_database_url=values.get("PREFERENCE_MLFLOW_DATABASE_URL") or "",
        external_celery_broker_url=values.get("PREFERENCE_CELERY_BROKER_URL") or "",
    )


@dataclass(frozen=True)
class ServiceSpec:
    """How to start one service and how to tell that it is healthy."""

    name: str
    command: list[str]
    env: dict[str, str]
    healthy: Callable[[], bool]
    url: str
    start_timeout: float
    run_as: servers.RunAs | None = None


def _http_status(url: str, timeout: float = 3.0) -> int | None:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:  # noqa: S310 - loopback only
            return int(response.status)
    except urllib.error.HTTPError as error:
        return int(error.code)
    except (urllib.error.URLError, OSError):
        return None


def _http_json(url: str, timeout: float = 3.0) -> dict | None:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:  # noqa: S310 - loopback only
            return json.loads(response.read())
    except (urllib.error.URLError, OSError, ValueError):
        return None


class ServiceManager:
    """Start, stop and inspect the embedded services of one :class:`Runtime`."""

    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime
        self._log_offsets: dict[str, int] = {}

    # -- specs ---------------------------------------------------------------------------
    def spec(self, name: str) -> ServiceSpec:
        rt = self.runtime
        bin_dir = Path(sys.executable).parent
        base_env = {**os.environ, **rt.client_env()}
        if name == "s3":
            ports = rt.ports
            command = [
                str(bin_dir / "weed"),
                "mini",
                f"-dir={rt.home / 's3'}",
                f"-ip={HOST}",
                f"-ip.bind={HOST}",
                f"-s3.port={ports.s3}",
                f"-master.port={ports.weed_master}",
                f"-volume.port={ports.weed_volume}",
                f"-filer.port={ports.weed_filer}",
                f"-admin.port={ports.weed_admin}",
                "-admin.ui=false",
                "-s3.port.iceberg=0",
                "-s3.port.lance=0",
                "-webdav=false",
                f"-bucket={rt.bucket}",
            ]
            return ServiceSpec("s3", command, base_env, self._s3_healthy, rt.s3_endpoint, 90)
        if name == "mlflow":
            command = [
                sys.executable,
                "-m",
                "mlflow",
                "server",
                "--host",
                HOST,
                "--port",
                str(rt.ports.mlflow),
                "--backend-store-uri",
                rt.mlflow_database_url if rt.production else f"sqlite:///{rt.home / 'mlflow' / 'mlflow.db'}",
                "--artifacts-destination",
                f"s3://{rt.bucket}/mlflow",
                "--workers",
                "1",
            ]
            healthy = lambda: _http_status(f"{rt.mlflow_uri}/health") == 200  # noqa: E731
            # Tracking and the registry only: no job runners (MLflow's GenAI jobs, several Python
            # processes polling their queues, a quarter of the server's CPU here).
            env = {**base_env, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
            return ServiceSpec("mlflow", command, env, healthy, rt.mlflow_uri, 120)
        if name == "postgres":
            command = servers.postgres_command(self.data_dir(name), rt.ports.postgres, rt.durable)
            healthy = lambda: servers.postgres_healthy(rt.ports.postgres, rt.database_password)  # noqa: E731
            url = f"postgresql://{HOST}:{rt.ports.postgres}"
            return ServiceSpec(name, command, base_env, healthy, url, 120, servers.postgres_run_as())
        if name == "redis":
            command = [servers.redis_server_binary(), str(self.runtime.home / "redis" / "redis.conf")]
            healthy = lambda: servers.redis_healthy(rt.ports.redis, rt.broker_password)  # noqa: E731
            return ServiceSpec(name, command, base_env, healthy, f"redis://{HOST}:{rt.ports.redis}", 60)
        if name == "spark-master":
            command = [
                str(bin_dir / "spark-class"),
                "org.apache.spark.deploy.master.Master",
                "--host",
                HOST,
                "--port",
                str(rt.ports.spark_master),
                "--webui-port",
                str(rt.ports.spark_master_ui),
            ]
            # No REST submission server: tasks connect as drivers (and its fixed port would clash).
            env = {
                **base_env,
                "SPARK_HOME": _spark_home(),
                "SPARK_LOCAL_IP": HOST,
                "SPARK_MASTER_OPTS": "-Dspark.master.rest.enabled=false",
            }
            healthy = lambda: (self._spark_master() or {}).get("status") == "ALIVE"  # noqa: E731
            return ServiceSpec(name, command, env, healthy, rt.spark_master_url, 120)
        if name.startswith("spark-worker-"):
            index = int(name.rsplit("-", 1)[1])
            ui = rt.ports.spark_worker_ui[index - 1]
            private = self.private_dir(name)
            command = [
                str(bin_dir / "spark-class"),
                "org.apache.spark.deploy.worker.Worker",
                "--host",
                HOST,
                "--webui-port",
                str(ui),
                "--cores",
                str(rt.spark_worker_cores),
                "--memory",
                rt.spark_worker_memory,
                "--work-dir",
                str(private / "work"),
                rt.spark_master_url,
            ]
            env = {
                **base_env,
                **self._private_env(name),
                "SPARK_HOME": _spark_home(),
                "SPARK_LOCAL_IP": HOST,
                "SPARK_LOCAL_DIRS": str(private / "spark"),
                "PYSPARK_PYTHON": sys.executable,
            }
            return ServiceSpec(name, command, env, lambda: self._spark_worker_alive(ui), f"http://{HOST}:{ui}", 120)
        if name not in rt.services:
            raise ValueError(
                f"unknown service {name!r} in the {rt.profile} profile; expected one of {', '.join(rt.services)}"
            )
        airflow = str(bin_dir / "airflow")
        env = {**os.environ, **rt.airflow_env(), "PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}"}
        if name == "airflow":
            return ServiceSpec("airflow", [airflow, "standalone"], env, self._airflow_healthy, rt.airflow_url, 300)
        if name == "api-server":
            command = [airflow, "api-server", "--host", HOST, "--port", str(rt.ports.airflow), "--workers", "1"]
            healthy = lambda: self._health_status("metadatabase") == "healthy"  # noqa: E731
            return ServiceSpec(name, command, env, healthy, rt.airflow_url, 180)
        if name in AIRFLOW_COMPONENTS:
            command = [airflow, name] + ([] if name == "dag-processor" else ["--skip-serve-logs"])
            healthy = lambda: self._health_status(AIRFLOW_COMPONENTS[name]) == "healthy"  # noqa: E731
            return ServiceSpec(name, command, env, healthy, rt.airflow_url, 180)
        queue = name.removeprefix("worker-")
        env = {**env, **self._private_env(name)}
        command = [
            airflow,
            "celery",
            "worker",
            "--queues",
            queue,
            "--concurrency",
            str(WORKER_QUEUES[queue]),
            "--celery-hostname",
            f"{queue}@%h",
            "--skip-serve-logs",  # task logs are files under AIRFLOW_HOME, shared with the API server
            "--without-gossip",
            "--without-mingle",
        ]
        return ServiceSpec(name, command, env, lambda: self._worker_ready(name), f"celery://{queue}", 180)

    def _spark_master(self) -> dict | None:
        return _http_json(f"http://{HOST}:{self.runtime.ports.spark_master_ui}/json/")

    def _spark_worker_alive(self, ui_port: int) -> bool:
        """The master lists the worker (by its web UI's port) as alive."""
        workers = (self._spark_master() or {}).get("workers") or []
        return any(
            w.get("state") == "ALIVE" and str(w.get("webuiaddress", "")).endswith(f":{ui_port}") for w in workers
        )

    def private_dir(self, name: str) -> Path:
        """A service's own folder (temporary files, scratch, Spark's local directories)."""
        return self.runtime.home / name / "private"

    def _private_env(self, name: str) -> dict[str, str]:
        """A service's own temporary folder, scratch and home (what an isolated runtime hides from the others)."""
        private = self.private_dir(name)
        for sub in ("tmp", "local", "home"):
            (private / sub).mkdir(parents=True, exist_ok=True)
        return {
            "TMPDIR": str(private / "tmp"),
            "PREFERENCE_LOCAL_DIR": str(private / "local"),
            "HOME": str(private / "home"),
        }

    def _s3_healthy(self) -> bool:
        if _http_status(self.runtime.s3_endpoint + "/") is None:
            return False
        from include.preference.config import S3Settings
        from include.preference.storage import ObjectStore, StorageError

        store = ObjectStore(
            S3Settings(
                endpoint_url=self.runtime.s3_endpoint,
                access_key_id=self.runtime.access_key_id,
                secret_access_key=self.runtime.secret_access_key,
                bucket=self.runtime.bucket,
            )
        )
        try:
            store.ensure_bucket()
        except StorageError:
            return False
        return True

    def _health_status(self, component: str) -> str | None:
        health = _http_json(f"{self.runtime.airflow_url}/api/v2/monitor/health")
        return ((health or {}).get(component) or {}).get("status")

    def _worker_ready(self, name: str) -> bool:
        """A Celery worker logs ``<queue>@<host> ready.`` once it consumes; only this start's lines count."""
        path = self.log_file(name)
        queue = name.removeprefix("worker-")
        if not path.exists():
            return False
        with path.open("rb") as handle:
            handle.seek(self._log_offsets.get(name, 0))
            return any(re.search(rb"\b%s@\S+ ready\." % re.escape(queue.encode()), line) for line in handle)

    def _airflow_healthy(self) -> bool:
        health = _http_json(f"{self.runtime.airflow_url}/api/v2/monitor/health")
        if not health:
            return False
        parts = ("metadatabase", "scheduler", "dag_processor", "triggerer")
        return all((health.get(p) or {}).get("status") == "healthy" for p in parts)

    # -- files ---------------------------------------------------------------------------
    def data_dir(self, name: str) -> Path:
        return self.runtime.home / name / "data"

    def pid_file(self, name: str) -> Path:
        return self.runtime.home / "run" / f"{name}.pid"

    def log_file(self, name: str) -> Path:
        return self.runtime.home / "logs" / f"{name}.log"

    def log_tail(self, name: str, lines: int = 60) -> str:
        """The last lines of a service's log (for error messages)."""
        path = self.log_file(name)
        if not path.exists():
            return f"(no log at {path})"
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])

    def pid(self, name: str) -> int | None:
        """The PID of a running service started by this manager, or None."""
        path = self.pid_file(name)
        if not path.exists():
            return None
        try:
            pid = int(path.read_text().strip())
            os.kill(pid, 0)
        except (ValueError, ProcessLookupError, PermissionError):
            return None
        return pid

    # -- lifecycle -----------------------------------------------------------------------
    def start(self, name: str) -> None:
        """Start one service unless it already runs healthy; wait until it is healthy."""
        spec = self.spec(name)
        if self.pid(name) and spec.healthy():
            log.info("%s already running at %s", name, spec.url)
            return
        self.stop(name)
        for directory in ("run", "logs", name):
            (self.runtime.home / directory).mkdir(parents=True, exist_ok=True)
        if name in ("postgres", "redis"):
            self._prepare_server(name)
        if name in ("airflow", "api-server"):
            self._prepare_airflow()
        if name == "mlflow" and self.runtime.production:
            ensure_database(self.runtime.mlflow_database_url)
        self._log_offsets[name] = self.log_file(name).stat().st_size if self.log_file(name).exists() else 0
        command = list(spec.command)
        if self.runtime.isolated and name in ISOLATED_SERVICES:
            # The others' private folders (their temporary files, scratch and home): not this one's.
            hide = [
                self.private_dir(other)
                for other in ISOLATED_SERVICES
                if other != name and other in self.runtime.services
            ]
            command = private_mount_namespace(command, hide)
        with self.log_file(name).open("ab") as log_handle:
            process = subprocess.Popen(  # noqa: S603 - fixed commands
                command,
                env=spec.env,
                cwd=self.runtime.home / name,
                stdout=log_handle,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
                **servers.run_as_arguments(spec.run_as),
            )
        self.pid_file(name).write_text(f"{process.pid}\n")
        deadline = time.monotonic() + spec.start_timeout
        while time.monotonic() < deadline:
            if process.poll() is not None:
                raise ServiceError(
                    f"{name} exited with code {process.returncode} during start-up; see {self.log_file(name)}"
                )
            if spec.healthy():
                log.info("%s healthy at %s (pid %d)", name, spec.url, process.pid)
                if name in ("airflow", "api-server"):
                    self._configure_airflow()
                return
            time.sleep(1.0)
        self.stop(name)
        raise ServiceError(
            f"{name} was not healthy within {spec.start_timeout:.0f}s at {spec.url}; see {self.log_file(name)}"
        )

    def _prepare_server(self, name: str) -> None:
        """PostgreSQL: a cluster initialised on first use; Redis: its configuration file (password inside)."""
        rt = self.runtime
        port = getattr(rt.ports, name)
        if not _port_is_free(port):
            raise ServiceError(
                f"{name} cannot listen on {HOST}:{port}: the port is taken "
                f"(another server runs there); choose another with {name.upper()}_PORT"
            )
        if name == "postgres":
            if servers.init_postgres(self.data_dir(name), rt.database_password, self.log_file(name)):
                log.info("initialised a PostgreSQL cluster in %s", self.data_dir(name))
            return
        config = rt.home / "redis" / "redis.conf"
        servers.write_redis_config(config, rt.ports.redis, rt.broker_password, self.data_dir(name))

    def _configure_airflow(self) -> None:
        """Create the pools the DAGs use (see ``dag_policy.POOLS``)."""
        from include.preference.airflow_client import AirflowClient
        from include.preference.dag_policy import POOLS

        client = AirflowClient(self.runtime.airflow_url, ADMIN_USER, self.runtime.admin_password)
        for pool, (slots, description) in POOLS.items():
            client.ensure_pool(pool, slots, description)

    def _prepare_airflow(self) -> None:
        """Fix the admin password before Airflow generates a random one; production: migrate the DBs.

        Standalone migrates its SQLite database itself; the production profile creates its
        PostgreSQL databases when missing and runs ``airflow db migrate`` once, before any component.
        """
        rt = self.runtime
        airflow_home = rt.home / "airflow"
        airflow_home.mkdir(parents=True, exist_ok=True)
        passwords = airflow_home / "passwords.json"
        passwords.write_text(json.dumps({ADMIN_USER: rt.admin_password}))
        passwords.chmod(0o600)
        if not rt.production:
            return
        ensure_database(rt.airflow_database_url)
        migrate = self.spec("api-server")
        with self.log_file("airflow-migrate").open("ab") as log_handle:
            done = subprocess.run(  # noqa: S603 - fixed command
                [migrate.command[0], "db", "migrate"],
                env=migrate.env,
                cwd=airflow_home,
                stdout=log_handle,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                check=False,
                timeout=600,
            )
        if done.returncode != 0:
            raise ServiceError(f"airflow db migrate failed ({done.returncode}); see {self.log_file('airflow-migrate')}")

    def stop(self, name: str, timeout: float = 30.0) -> bool:
        """Stop a service's whole process group by PID. Returns True if something was stopped."""
        pid = self.pid(name)
        self.pid_file(name).unlink(missing_ok=True)
        if pid is None:
            return False
        for sig, wait in ((signal.SIGTERM, timeout), (signal.SIGKILL, 10.0)):
            try:
                if name == "postgres" and sig == signal.SIGTERM:
                    # PostgreSQL's fast shutdown (SIGINT to the postmaster alone) ends open sessions;
                    # SIGTERM would wait for every client to disconnect.
                    os.kill(pid, signal.SIGINT)
                else:
                    os.killpg(pid, sig)
            except ProcessLookupError:
                return True
            deadline = time.monotonic() + wait
            while time.monotonic() < deadline:
                try:
                    os.killpg(pid, 0)
                except ProcessLookupError:
                    return True
                self._reap(pid)
                time.sleep(0.2)
        return True

    @staticmethod
    def _reap(pid: int) -> None:
        # Only our own children can be reaped; for others the call has nothing to do.
        with contextlib.suppress(ChildProcessError):
            os.waitpid(pid, os.WNOHANG)

    def up(self, names: tuple[str, ...] | None = None) -> None:
        """Start services in dependency order (S3, MLflow, then Airflow's parts)."""
        for name in self.runtime.services:
            if names is None or name in names:
                self.start(name)

    def down(self, names: tuple[str, ...] | None = None) -> None:
        """Stop services in reverse order; without names, whatever runs here, of either profile."""
        everything = (*SERVICES, *(n for n in PRODUCTION_SERVICES if n not in SERVICES))
        for name in reversed(everything if names is None else self.runtime.services):
            if names is None or name in names:
                self.stop(name)

    def status(self) -> dict[str, dict[str, object]]:
        """For each service of the profile: pid, healthy, url, log."""
        report: dict[str, dict[str, object]] = {}
        for name in self.runtime.services:
            spec = self.spec(name)
            pid = self.pid(name)
            report[name] = {
                "pid": pid,
                "healthy": bool(pid) and spec.healthy(),
                "url": spec.url,
                "log": str(self.log_file(name)),
            }
        return report


def conninfo(url: str) -> str:
    """A psycopg connection string for the database named in a SQLAlchemy PostgreSQL ``url``."""
    from psycopg.conninfo import conninfo_to_dict, make_conninfo

    server, name = _server_and_name(url)
    return make_conninfo("", **{**conninfo_to_dict(server), "dbname": name})


def _server_and_name(url: str) -> tuple[str, str]:
    """A connection string for the server's ``postgres`` database, and the database named in ``url``."""
    from psycopg.conninfo import make_conninfo
    from sqlalchemy.engine import make_url

    parsed = make_url(url)
    if not parsed.get_backend_name().startswith("postgresql") or not parsed.database:
        raise ServiceError(f"expected a PostgreSQL URL with a database name, got {parsed.render_as_string()}")
    server: dict[str, str | int] = {
        "host": parsed.host or HOST,
        "port": parsed.port or 5432,
        "user": parsed.username or "postgres",
        "dbname": "postgres",
    }
    if parsed.password is not None:
        server["password"] = str(parsed.password)
    return make_conninfo("", **server), parsed.database


def ensure_database(url: str) -> bool:
    """Create the PostgreSQL database named in ``url`` when missing; True when it was created."""
    import psycopg
    from psycopg import sql

    server, name = _server_and_name(url)
    with psycopg.connect(server, autocommit=True) as conn:
        if conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone():
            return False
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    log.info("created PostgreSQL database %s", name)
    return True


def drop_database(url: str) -> None:
    """Drop the PostgreSQL database named in ``url`` (its sessions closed first), if it exists."""
    import psycopg
    from psycopg import sql

    server, name = _server_and_name(url)
    with psycopg.connect(server, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


def _spark_home() -> str:
    """pyspark's own folder: its ``spark-class`` and jars (what a Spark distribution would hold)."""
    import importlib.util

    spec = importlib.util.find_spec("pyspark")
    if spec is None or not spec.submodule_search_locations:
        raise ServiceError("pyspark is not installed in this environment (make install)")
    return str(next(iter(spec.submodule_search_locations)))


# Mount an empty tmpfs over each argument up to "--", then run the rest as the command.
_MOUNT_AND_RUN = (
    'for d in "$@"; do case "$d" in --) shift; break;; esac; '
    'mount -t tmpfs tmpfs "$d" || exit 97; shift; done; exec "$@"'
)


def private_mount_namespace(command: list[str], hide: list[Path]) -> list[str]:
    """``command`` in a mount namespace of its own (``unshare -m``, root only), with an empty tmpfs
    over each of ``hide``: what other processes write there, it cannot see, as on another host."""
    for directory in hide:
        directory.mkdir(parents=True, exist_ok=True)
    return [
        "unshare",
        "--mount",
        "--propagation",
        "private",
        "--",
        "sh",
        "-c",
        _MOUNT_AND_RUN,
        "sh",
        *(str(d) for d in hide),
        "--",
        *command,
    ]


def ephemeral_runtime(home: Path, profile: str = "embedded", servers_of: Runtime | None = None) -> Runtime:
    """A runtime on free ports with throwaway credentials, for integration tests and benchmarks.

    In the production profile it runs its own PostgreSQL and Redis, unless ``servers_of`` names a
    runtime whose servers run already: then it gets databases of its own there (drop them with
    :func:`drop_database`) and a Redis database chosen at random for the broker.
    """
    suffix = secrets.token_hex(4)
    airflow_database = mlflow_database = broker = ""
    if servers_of is not None:
        airflow_database = f"{servers_of.database_server_url}/preference_airflow_{suffix}"
        mlflow_database = f"{servers_of.database_server_url}/preference_mlflow_{suffix}"
        broker = servers_of.celery_broker_url.rsplit("/", 1)[0] + f"/{1 + secrets.randbelow(15)}"
    return Runtime(
        home=home,
        ports=Ports.free(),
        access_key_id="test" + suffix,
        secret_access_key=secrets.token_urlsafe(16),
        admin_password=secrets.token_urlsafe(8),
        profile=profile,
        database_password=secrets.token_urlsafe(12),
        broker_password=secrets.token_urlsafe(12),
        durable=False,
        external_airflow_database_url=airflow_database,
        external_mlflow_database_url=mlflow_database,
        external_celery_broker_url=broker,
    )
