"""One way to get a Spark session: ``local[*,4]`` here, the cluster's master in production."""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

from include.preference.config import PROJECT_ROOT

if TYPE_CHECKING:
    from pyspark.sql import SparkSession


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


def spark_session(app_name: str, master: str | None = None, *, reuse_workers: bool = False) -> "SparkSession":
    """A Spark session configured for this project (Arrow transfers, no UI, UTC).

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
        .config("spark.sql.shuffle.partitions", os.environ.get("PREFERENCE_SPARK_SHUFFLE_PARTITIONS", "8"))
        .config("spark.driver.memory", os.environ.get("PREFERENCE_SPARK_DRIVER_MEMORY", "4g"))
        # A fresh Python worker per task unless asked: training tasks set up TensorFlow's cluster,
        # which a process can do only once (see include.preference.training.launcher).
        .config("spark.python.worker.reuse", "true" if reuse_workers else "false")
    )
    archive = class_archive()
    java_options = os.environ.get("PREFERENCE_SPARK_DRIVER_JAVA_OPTIONS", "")
    if archive is not None:
        java_options = f"-XX:SharedArchiveFile={archive} {java_options}".strip()
    if java_options:
        builder = builder.config("spark.driver.extraJavaOptions", java_options)
    if os.environ.get("PREFERENCE_SPARK_INTERPRETED", "").lower() in ("1", "true", "yes"):
        # Evaluate expressions without generating and compiling Java code for them: for the tiny
        # data of tests, compiling costs more than it saves (same results, a third less time there);
        # real volumes want the generated code.
        builder = builder.config("spark.sql.codegen.factoryMode", "NO_CODEGEN").config(
            "spark.sql.codegen.wholeStage", "false"
        )
    session = builder.getOrCreate()
    session.sparkContext.setLogLevel("WARN")
    return session


def _exercise(session: "SparkSession", scratch: Path) -> None:
    """The kinds of work the jobs do: pandas in and out, Parquet, joins, windows, pandas UDFs."""
    import pandas as pd
    from pyspark.sql import Window
    from pyspark.sql import functions as F

    frame = pd.DataFrame({"customer": [i % 7 for i in range(200)], "amount": [float(i) for i in range(200)]})
    events = session.createDataFrame(frame)
    path = str(scratch / "events")
    events.write.mode("overwrite").parquet(path)
    events = session.read.parquet(path)
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

    Written beside the target and renamed into place, so a driver never maps a half-written file.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.name}.{os.getpid()}")
    env = {**os.environ, "PREFERENCE_SPARK_CLASS_ARCHIVE": "none"}
    # Classes from signed jars cannot be archived; the JVM says so for each of them (hundreds of lines).
    env["PREFERENCE_SPARK_DRIVER_JAVA_OPTIONS"] = f"-XX:ArchiveClassesAtExit={partial} -Xlog:cds=error"
    subprocess.run([sys.executable, "-m", "include.preference.spark", "exercise"], check=True, env=env)
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

    session = spark_session("class-archive", master="local[2]")
    try:
        with tempfile.TemporaryDirectory(prefix="spark-archive-") as scratch:
            _exercise(session, Path(scratch))
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
