"""Shared fixtures: real services on 127.0.0.1 with free ports, stopped by PID; an isolated Airflow."""

from __future__ import annotations

import json
import logging
import os
import secrets
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

PROJECT_ROOT = Path(__file__).resolve().parents[1]

# A pytest-xdist test process runs under execnet's bootstrap, whose __main__ has neither __spec__
# nor __file__; pyspark.sql.connect (imported by Great Expectations) takes that for a doctest run
# and exits the process. Name the file it runs from.
if os.environ.get("PYTEST_XDIST_WORKER") and not hasattr(sys.modules["__main__"], "__file__"):
    sys.modules["__main__"].__file__ = "pytest-xdist-worker"
SHARED_DATA = PROJECT_ROOT.parent / "shared" / "data"

# Airflow reads its configuration at import: point it at a private home before any test imports it,
# and keep the developer's own connections and services out of the tests.
_AIRFLOW_HOME = Path(tempfile.mkdtemp(prefix="preference-airflow-"))
for _name in [n for n in os.environ if n.startswith(("AIRFLOW_CONN_", "AIRFLOW__", "PREFERENCE_", "MLFLOW_"))]:
    del os.environ[_name]
for _name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "S3_ENDPOINT_URL", "AIRFLOW_HOME"):
    os.environ.pop(_name, None)
_QUICK_JVM = "-XX:TieredStopAtLevel=1 -XX:ReservedCodeCacheSize=240m -XX:+UseSerialGC -Xss4m"
os.environ.update(
    {
        "AIRFLOW_HOME": str(_AIRFLOW_HOME),
        "AIRFLOW__CORE__DAGS_FOLDER": str(PROJECT_ROOT / "dags"),
        "AIRFLOW__CORE__PLUGINS_FOLDER": str(PROJECT_ROOT / "plugins"),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__CORE__UNIT_TEST_MODE": "False",
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{_AIRFLOW_HOME / 'airflow.db'}",
        "PREFERENCE_CODE_VERSION": "test",
        # Test data is tiny: compiling generated code for Spark's expressions costs more than it saves.
        "PREFERENCE_SPARK_INTERPRETED": "true",
        # Every Spark driver here lives seconds to minutes on tiny data: the quick compiler alone and
        # the serial collector take half the CPU of the defaults (whose optimising compiler and
        # concurrent collector threads pay off only on long runs), with the same results. The quick
        # compiler's frames are larger: ALS's deep recursion needs a 4 MB thread stack (1 MB overflows).
        # The quick compiler alone gets a 48 MB code cache; a test process's driver runs hundreds of
        # jobs, and a full cache ends in "Out of space in CodeCache for adapters": 240 MB, the default
        # of the full compiler.
        "PREFERENCE_SPARK_DRIVER_JAVA_OPTIONS": _QUICK_JVM,
        # The same for the executors of the test clusters' jobs (each lives for one job).
        "PREFERENCE_SPARK_EXECUTOR_JAVA_OPTIONS": _QUICK_JVM,
    }
)


@pytest.fixture(scope="session")
def services_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("services")


@pytest.fixture(scope="session")
def runtime(services_home: Path):
    """A runtime on free ports with throwaway keys (no service started yet)."""
    from include.preference.services import ephemeral_runtime

    return ephemeral_runtime(services_home)


@pytest.fixture(scope="session")
def s3_service(runtime) -> Iterator[object]:
    """A real SeaweedFS S3 server for the session, stopped by PID afterwards."""
    from include.preference.services import ServiceManager

    manager = ServiceManager(runtime)
    manager.start("s3")
    yield runtime
    manager.stop("s3")


@pytest.fixture(scope="session")
def database_servers() -> Iterator[object]:
    """One PostgreSQL and one Redis for the session, the project's own (Debian's binaries), stopped by PID.

    Production-profile tests get databases and a Redis database of their own on them
    (``ephemeral_runtime(..., servers_of=database_servers)``). The home is outside pytest's
    private temporary tree: under root, PostgreSQL runs as the ``postgres`` user, which must reach it.
    """
    import shutil

    from include.preference.services import ServiceManager, ephemeral_runtime

    home = Path(tempfile.mkdtemp(prefix="preference-servers-"))
    home.chmod(0o755)
    runtime = ephemeral_runtime(home, profile="production")
    manager = ServiceManager(runtime)
    try:
        manager.start("postgres")
        manager.start("redis")
        yield runtime
    finally:
        manager.stop("redis")
        manager.stop("postgres")
        shutil.rmtree(home, ignore_errors=True)


@pytest.fixture(scope="session")
def mlflow_service(s3_service) -> Iterator[object]:
    """A real MLflow tracking server (SQLite store, artifacts in the S3 bucket)."""
    from include.preference.services import ServiceManager

    manager = ServiceManager(s3_service)
    manager.start("mlflow")
    yield s3_service
    manager.stop("mlflow")


def make_store(runtime, bucket: str | None = None):
    """An ObjectStore on the test S3 server, in its own fresh bucket."""
    from include.preference.config import S3Settings
    from include.preference.storage import ObjectStore

    store = ObjectStore(
        S3Settings(
            endpoint_url=runtime.s3_endpoint,
            access_key_id=runtime.access_key_id,
            secret_access_key=runtime.secret_access_key,
            bucket=bucket or f"t-{secrets.token_hex(6)}",
        )
    )
    store.ensure_bucket()
    return store


@pytest.fixture
def store_factory(s3_service):
    """Make ObjectStores on the test S3 server: ``store_factory(bucket=None)``."""
    return lambda bucket=None: make_store(s3_service, bucket)


@pytest.fixture
def store(s3_service):
    """A fresh bucket per test, so tests never see each other's partitions."""
    return make_store(s3_service)


@pytest.fixture
def lake_env(s3_service, store, monkeypatch: pytest.MonkeyPatch):
    """The environment a task sees: the test S3 server through an Airflow-style connection."""
    for name, value in s3_service.client_env().items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("PREFERENCE_BUCKET", store.bucket)
    return store


@pytest.fixture(scope="session")
def airflow_db() -> Path:
    """Airflow's metadata database (SQLite) for dag.test(), migrated once per session."""
    from include.preference.dag_policy import POOLS

    airflow = str(Path(sys.executable).parent / "airflow")
    subprocess.run([airflow, "db", "migrate"], check=True, capture_output=True, env=os.environ.copy(), timeout=600)
    for pool, (slots, description) in POOLS.items():
        subprocess.run(
            [airflow, "pools", "set", pool, str(slots), description],
            check=True,
            capture_output=True,
            env=os.environ.copy(),
            timeout=300,
        )
    return _AIRFLOW_HOME


@pytest.fixture(scope="session")
def spark():
    """One local Spark session for the tests that need it (two cores, like this machine)."""
    from include.preference.spark import spark_session

    return spark_session("tests", master="local[2]")


@pytest.fixture(autouse=True)
def mlflow_tracking_uri_from_the_environment() -> Iterator[None]:
    """Each test starts with MLflow's tracking URI taken from the environment.

    Task code sets MLflow's process-wide tracking URI (in Airflow every task is a process of its
    own); in this one long process, a URI left by an earlier test (a server since stopped) would
    win over the variable the next test sets.
    """
    before = os.environ.get("MLFLOW_TRACKING_URI")
    yield
    utils = sys.modules.get("mlflow.tracking._tracking_service.utils")
    if utils is not None:
        utils._tracking_uri = None  # noqa: SLF001 - the one switch MLflow offers, its own global
    if before is None:
        os.environ.pop("MLFLOW_TRACKING_URI", None)
    else:
        os.environ["MLFLOW_TRACKING_URI"] = before


@pytest.fixture(scope="session", autouse=True)
def stop_spark_at_the_end():
    """Stop Spark while logging still works (py4j logs from its finaliser otherwise)."""
    yield
    if "pyspark" in sys.modules:
        from pyspark import SparkContext

        context = SparkContext._active_spark_context
        if context is not None:
            context.stop()
        # py4j logs from finalisers at interpreter exit, after pytest closed the streams.
        logging.getLogger("py4j").setLevel(logging.WARNING)


@pytest.fixture(scope="session")
def session_store(s3_service):
    """One bucket for the session's shared builds (each in a work area of its own)."""
    return make_store(s3_service)


@pytest.fixture(scope="session")
def validated_history(session_store):
    """Five weeks of small synthetic days, validated, in a work area of the lake (read-only: clone it)."""
    import datetime as dt

    from tests.support.lake import day_range, fill_validated, new_lake

    lake = new_lake(session_store, "validated-history")
    days = day_range(dt.date(2025, 3, 1), HISTORY_DAYS)
    fill_validated(lake, days)
    return lake, days


HISTORY_DAYS = 36
KIND_MARKERS = {"unit", "integration", "e2e", "slow"}


# Seconds per module of a full run (refresh it from .local/test-artifacts/module-seconds.json).
MODULE_SECONDS = PROJECT_ROOT / "tests" / "module_seconds.json"


def _module(nodeid: str) -> str:
    return nodeid.split("::", 1)[0]


# Session fixtures that cost minutes, and the directories of the modules that use them: those
# modules run on one test process, so that each fixture is built once per run, not once per process.
SHARED_BUILDS = {"validated_history", "chain", "training_sets", "small_model", "small_profile"}
SHARED_BUILD_DIRS = tuple(f"tests/integration/{d}/" for d in ("features", "scoring", "text", "training", "webapp"))


def _group(module: str) -> str:
    """The unit of work of a parallel run: the module, or the modules that share the builds."""
    return "shared-builds" if module.startswith(SHARED_BUILD_DIRS) else module


def pytest_xdist_make_scheduler(config: pytest.Config, log):
    """``--dist loadfile``, with the modules that share the builds as one unit."""
    if config.getvalue("dist") != "loadfile":
        return None
    from xdist.scheduler import LoadScopeScheduling

    class ModuleGroups(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            return _group(_module(nodeid))

    return ModuleGroups(config, log)


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """House rule: every test says what kind it is. Then the order of the parallel run.

    `make test` runs on several processes (pytest-xdist, ``--dist loadfile`` and the scheduler
    above): every module runs whole on one process, so its module fixtures are built once, and the
    modules that use SHARED_BUILDS run together. Units are handed out longest first (by
    tests/module_seconds.json), so that no long unit starts last and runs alone.
    """
    unmarked = [item.nodeid for item in items if not KIND_MARKERS & {m.name for m in item.iter_markers()}]
    if unmarked:
        raise pytest.UsageError(f"tests without a unit/integration/e2e/slow marker: {unmarked[:10]}")
    stray = sorted(
        {
            _module(item.nodeid)
            for item in items
            if SHARED_BUILDS & set(getattr(item, "fixturenames", ()))
            and _group(_module(item.nodeid)) == _module(item.nodeid)
        }
    )
    if stray:
        raise pytest.UsageError(f"modules using {sorted(SHARED_BUILDS)} outside {SHARED_BUILD_DIRS}: {stray}")
    known: dict[str, float] = json.loads(MODULE_SECONDS.read_text()) if MODULE_SECONDS.exists() else {}
    group_seconds: dict[str, float] = {}
    for module in {_module(item.nodeid) for item in items}:
        group_seconds[_group(module)] = group_seconds.get(_group(module), 0.0) + known.get(module, 0.0)
    first_seen: dict[str, int] = {}
    for index, item in enumerate(items):
        first_seen.setdefault(_group(_module(item.nodeid)), index)
        first_seen.setdefault(_module(item.nodeid), index)

    def order(item: pytest.Item) -> tuple[float, int, int]:
        module = _module(item.nodeid)
        return (-group_seconds[_group(module)], first_seen[_group(module)], first_seen[module])

    items.sort(key=order)


# -- where the time goes: seconds per module (setup, call and teardown of its tests, fixtures included) --
_MODULE_SECONDS: dict[str, float] = {}


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    module = _module(report.nodeid)
    _MODULE_SECONDS[module] = _MODULE_SECONDS.get(module, 0.0) + report.duration


def pytest_terminal_summary(terminalreporter, exitstatus: int, config: pytest.Config) -> None:
    if not _MODULE_SECONDS:
        return
    total = sum(_MODULE_SECONDS.values())
    terminalreporter.write_sep("=", "seconds per module (setup + call + teardown, session fixtures where first used)")
    for module, seconds in sorted(_MODULE_SECONDS.items(), key=lambda item: -item[1]):
        terminalreporter.write_line(f"{seconds:8.1f}s {100 * seconds / total:5.1f}%  {module}")
    terminalreporter.write_line(f"{total:8.1f}s total in tests")
    if hasattr(config, "workerinput"):
        return  # a test process of xdist: the controlling process writes the figures
    out = PROJECT_ROOT / ".local" / "test-artifacts"
    out.mkdir(parents=True, exist_ok=True)
    ordered = dict(sorted(((m, round(s, 1)) for m, s in _MODULE_SECONDS.items()), key=lambda item: -item[1]))
    (out / "module-seconds.json").write_text(json.dumps(ordered, indent=1) + "\n")
