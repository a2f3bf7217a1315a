"""One way to get a Spark session: ``local[*,4]`` here, the cluster's master in production."""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

from include.preference.config import PROJECT_ROOT, S3Settings

if TYPE_CHECKING:
    from pyspark.sql import SparkSession

    from include.preference.storage.spark_lake import SparkLake


DEFAULT_MASTER = "local[*,4]"
# Where ``make install`` writes the driver's class archive (see class_archive).
DEFAULT_CLASS_ARCHIVE = PROJECT_ROOT / ".local" / "jvm" / "spark-driver.jsa"


def class_archive() -> Path | None:
    """The driver JVM's class-data-sharing archive, when there is one.

    Every Airflow task that uses Spark starts a driver JVM of its own, and loading and verifying
    Spark's classes is most of that start (about 15 s on two cores, half with the archive: the
    classes come mapped from the archive, already parsed and verified). ``make install`` writes the
    archive for this machine's JVM and Spark (``python -m include.preference.spark archive``); an
    archive written by another JVM or for another class path is refused by the JVM with one warning
    line and the driver starts as it would without. ``PREFERENCE_SPARK_CLASS_ARCHIVE`` names another
    file; ``none`` turns it off.
    """
    configured = os.environ.get("PREFERENCE_SPARK_CLASS_ARCHIVE", "")
    if configured.lower() == "none":
        return None
    path = Path(configured) if configured else DEFAULT_CLASS_ARCHIVE
    # A missing file must not be passed: the JVM would then start without even its own base archive.
    return path if path.is_file() else None


def s3a_options(s3: S3Settings) -> dict[str, str]:
    """Hadoop settings that point S3A at the lake: the same endpoint, region and keys as boto3.

    Path-style requests (what SeaweedFS and MinIO serve). The keys are set on the running JVM's
    Hadoop configuration (see :func:`configure_s3a`), never on a command line or in a conf file.
    """
    endpoint = s3.endpoint_url or f"https://s3.{s3.region}.amazonaws.com"
    return {
        "fs.s3a.endpoint": endpoint,
        "fs.s3a.endpoint.region": s3.region,
        "fs.s3a.path.style.access": "true" if s3.endpoint_url else "false",
        "fs.s3a.connection.ssl.enabled": "true" if endpoint.startswith("https") else "false",
        "fs.s3a.aws.credentials.provider": "org.apache.hadoop.fs.s3a.SimpleAWSCredentialsProvider",
        "fs.s3a.access.key": s3.access_key_id,
        "fs.s3a.secret.key": s3.secret_access_key,
        # Outputs go to a job's own work area and are published behind a manifest: the commit needs
        # no atomic directory rename, so each task's files are moved once, at task commit.
        "mapreduce.fileoutputcommitter.algorithm.version": "2",
        "mapreduce.fileoutputcommitter.marksuccessfuljobs": "false",
        "fs.s3a.committer.name": "file",
        # Every job writes into a fresh work area of its own (see SparkLake): no probe on create,
        # mkdir or delete for a file or folder in the way can find one there.
        "fs.s3a.performance.flags": "*",
        # Upload blocks buffered in memory, not on the executor's disk.
        "fs.s3a.fast.upload.buffer": "bytebuffer",
    }


def configure_s3a(session: "SparkSession", s3: S3Settings) -> None:
    """Point the session's S3A at ``s3``, on the JVM's Hadoop configuration (shipped to executors).

    When the settings change (another endpoint or key), S3A's cached filesystems are closed so the
    next read opens one with the new settings.
    """
    from pyspark import SparkContext

    conf = session.sparkContext._jsc.hadoopConfiguration()  # noqa: SLF001 - the JVM's Hadoop settings
    options = s3a_options(s3)
    if all(conf.get(key) == value for key, value in options.items()):
        return
    for key, value in options.items():
        conf.set(key, value)
    gateway = SparkContext._gateway  # noqa: SLF001
    if gateway is not None:
        gateway.jvm.org.apache.hadoop.fs.FileSystem.closeAll()


def _is_local(master: str | None) -> bool:
    """Whether the session's master runs executors in the driver's JVM (``local``, ``local[...]``)."""
    resolved = master or os.environ.get("PREFERENCE_SPARK_MASTER") or DEFAULT_MASTER
    return resolved == "local" or resolved.startswith("local[")


def spark_session(
    app_name: str, master: str | None = None, *, reuse_workers: bool = False, s3: S3Settings | None = None
) -> "SparkSession":
    """A Spark session configured for this project (Arrow transfers, no UI, UTC, S3A).

    ``s3``: the lake the job reads and writes through S3A (see :func:`configure_s3a`); the S3A jars
    (``python -m include.preference.jars fetch``) are on the driver's and executors' class path.

    The master comes from ``master``, else ``PREFERENCE_SPARK_MASTER``, else ``local[*,4]``: all
    cores, and a failed task is retried up to 3 times, as on a cluster (``spark.task.maxFailures``
    4); plain ``local[*]`` would fail the job on a task's first error.
    ``reuse_workers``: keep Python workers between tasks (scoring: the model loads once per
    worker). The default is a fresh worker per task, which training needs. The setting belongs to
    the first session of the process (Spark's context is created once).
    """
    from pyspark.sql import SparkSession

    # Python workers run this interpreter (the project's environment), not whatever is on PATH.
    if not os.environ.get("PYSPARK_PYTHON"):
        os.environ["PYSPARK_PYTHON"] = sys.executable
    builder = (
        SparkSession.builder.appName(app_name)
        .master(master or os.environ.get("PREFERENCE_SPARK_MASTER") or DEFAULT_MASTER)
        .config("spark.sql.execution.arrow.pyspark.enabled", "true")
        .config("spark.sql.session.timeZone", "UTC")
        .config("spark.ui.enabled", "false")
        # No console progress bars: task logs and command output are files, not terminals.
        .config("spark.ui.showConsoleProgress", "false")
        .config("spark.pyspark.python", os.environ["PYSPARK_PYTHON"])
        # No Python call site recorded with every column expression: that costs about five py4j
        # round trips per DataFrame call (a third of a tiny feature build's driver time), and only
        # adds the Python line to the query context of a runtime error's message.
        .config("spark.python.sql.dataFrameDebugging.enabled", "false")
        .config("spark.sql.shuffle.partitions", os.environ.get("PREFERENCE_SPARK_SHUFFLE_PARTITIONS", "8"))
        .config("spark.driver.memory", os.environ.get("PREFERENCE_SPARK_DRIVER_MEMORY", "4g"))
        # A fresh Python worker per task unless asked: training tasks set up TensorFlow's cluster,
        # which a process can do only once (see include.preference.training.launcher).
        .config("spark.python.worker.reuse", "true" if reuse_workers else "false")
    )
    if not _is_local(master):
        # Executors that share an address need not share a disk (containers on one host, workers in
        # mount namespaces of their own): read shuffle files through the executor that wrote them.
        builder = builder.config("spark.shuffle.readHostLocalDisk", "false")
    # On a cluster the task is the driver (client mode): executors connect back to it by this name.
    if driver_host := os.environ.get("PREFERENCE_SPARK_DRIVER_HOST"):
        # Bound on every interface of the task's container: its name resolves to the cluster network's.
        bind_all = "0.0.0.0"  # noqa: S104 - a container's interfaces; the host publishes no Spark port
        builder = builder.config("spark.driver.host", driver_host).config("spark.driver.bindAddress", bind_all)
    for setting, key in (
        ("PREFERENCE_SPARK_DRIVER_PORT", "spark.driver.port"),
        ("PREFERENCE_SPARK_BLOCK_MANAGER_PORT", "spark.blockManager.port"),
    ):
        if value := os.environ.get(setting):
            builder = builder.config(key, value)
    # GPUs per task (training's barrier tasks on a cluster's GPU worker): Spark gives each one that many.
    if gpus := os.environ.get("PREFERENCE_SPARK_TASK_GPUS"):
        builder = builder.config("spark.task.resource.gpu.amount", gpus).config(
            "spark.executor.resource.gpu.amount", gpus
        )
    from include.preference.jars import classpath

    # S3A on the class path of the driver and of every executor (where the cluster's workers keep
    # the same jars: the image bakes them at the same path, PREFERENCE_SPARK_JARS_DIR elsewhere).
    jars = ":".join(str(p) for p in classpath())
    builder = builder.config("spark.driver.extraClassPath", jars).config("spark.executor.extraClassPath", jars)
    archive = class_archive()
    java_options = os.environ.get("PREFERENCE_SPARK_DRIVER_JAVA_OPTIONS", "")
    if archive is not None:
        java_options = f"-XX:SharedArchiveFile={archive} {java_options}".strip()
    if java_options:
        builder = builder.config("spark.driver.extraJavaOptions", java_options)
    # Executors on a cluster are JVMs of their own, one per job and worker (in local mode they are
    # the driver's threads). A worker launches them with the driver's class path in the same order,
    # so the driver's archive serves them too where it lies at the same path (the project's image
    # and `make install` put it there on every host); where it does not, the JVM says so and starts
    # without it.
    executor_options = os.environ.get("PREFERENCE_SPARK_EXECUTOR_JAVA_OPTIONS", "")
    if archive is not None and not _is_local(master):
        executor_options = f"-XX:SharedArchiveFile={archive} {executor_options}".strip()
    if executor_options:
        builder = builder.config("spark.executor.extraJavaOptions", executor_options)
    if os.environ.get("PREFERENCE_SPARK_INTERPRETED", "").lower() in ("1", "true", "yes"):
        # Evaluate expressions without generating and compiling Java code for them: for the tiny
        # data of tests, compiling costs more than it saves (same results, a third less time there);
        # real volumes want the generated code.
        builder = builder.config("spark.sql.codegen.factoryMode", "NO_CODEGEN").config(
            "spark.sql.codegen.wholeStage", "false"
        )
    session = builder.getOrCreate()
    session.sparkContext.setLogLevel("WARN")
    if s3 is not None:
        configure_s3a(session, s3)
    return session


def _exercise(session: "SparkSession", lake: "SparkLake") -> None:
    """The kinds of work the jobs do: pandas in and out, Parquet through S3A, joins, windows, pandas UDFs."""
    import datetime as dt

    import pandas as pd
    from pyspark.sql import Window
    from pyspark.sql import functions as F

    from include.preference.storage.partitions import PartitionRef

    frame = pd.DataFrame({"customer": [i % 7 for i in range(200)], "amount": [float(i) for i in range(200)]})
    events = session.createDataFrame(frame)
    ref = PartitionRef("features", "exercise", dt.date(2000, 1, 1))
    lake.write_table(events, ref, ["customer"])
    events = lake.need(session, ref, "it was just written")
    totals = events.groupBy("customer").agg(F.sum("amount").alias("total"), F.count("*").alias("n"))
    ranked = events.join(totals, "customer").withColumn(
        "rank", F.row_number().over(Window.partitionBy("customer").orderBy(F.desc("amount")))
    )

    def scale(batches):
        for batch in batches:
            yield batch.assign(amount=batch["amount"] * 2)

    ranked.mapInPandas(scale, ranked.schema).toPandas()
    totals.groupBy().applyInPandas(lambda group: group.head(1), totals.schema).collect()


def write_class_archive(path: Path) -> Path:
    """Run a representative Spark job in a JVM that writes its loaded classes to ``path`` at exit.

    The job reads and writes Parquet through S3A, as every job does, on a throwaway SeaweedFS
    started for it (and stopped by PID). Written beside the target and renamed into place, so a
    driver never maps a half-written file.
    """
    from include.preference.services import ServiceManager, ephemeral_runtime

    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.name}.{os.getpid()}")
    with tempfile.TemporaryDirectory(prefix="spark-archive-") as home:
        runtime = ephemeral_runtime(Path(home))
        manager = ServiceManager(runtime)
        manager.start("s3")
        try:
            env = {**os.environ, **runtime.client_env(), "PREFERENCE_SPARK_CLASS_ARCHIVE": "none"}
            env["PREFERENCE_BUCKET"] = "archive"
            # Classes from signed jars cannot be archived; the JVM says so for each of them (hundreds of lines).
            env["PREFERENCE_SPARK_DRIVER_JAVA_OPTIONS"] = f"-XX:ArchiveClassesAtExit={partial} -Xlog:cds=error"
            subprocess.run([sys.executable, "-m", "include.preference.spark", "exercise"], check=True, env=env)
        finally:
            manager.stop("s3")
    if not partial.is_file():
        raise RuntimeError(f"the JVM wrote no class archive at {partial} (see the output above)")
    partial.replace(path)
    return path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m include.preference.spark", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    archive = sub.add_parser("archive", help="write the driver's class archive (make install does)")
    archive.add_argument("path", nargs="?", type=Path, default=DEFAULT_CLASS_ARCHIVE)
    sub.add_parser("exercise", help="run the representative job once (used by archive)")
    args = parser.parse_args(argv)
    if args.command == "archive":
        print(f"Spark driver class archive: {write_class_archive(args.path)}")
        return 0
    from pyspark import SparkContext

    from include.preference.config import load_settings
    from include.preference.storage import ObjectStore
    from include.preference.storage.spark_lake import spark_lake

    settings = load_settings()
    store = ObjectStore(settings.s3)
    store.ensure_bucket()
    session = spark_session("class-archive", master="local[2]", s3=settings.s3)
    try:
        with spark_lake(store, "class-archive") as lake:
            _exercise(session, lake)
    finally:
        session.stop()
    # The JVM writes the archive as it exits, which it does when its stdin closes: wait for it here
    # rather than leave it writing after this process is gone.
    gateway = SparkContext._gateway  # noqa: SLF001 - pyspark's handle on the JVM it launched
    if gateway is None:
        raise RuntimeError("no Spark JVM to wait for")
    jvm = gateway.proc
    jvm.stdin.close()
    return jvm.wait(timeout=600)


if __name__ == "__main__":
    sys.exit(main())
