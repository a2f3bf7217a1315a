"""One way to get a Spark session: ``local[*,4]`` here, the cluster's master in production."""

from __future__ import annotations

import os
import sys
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pyspark.sql import SparkSession


DEFAULT_MASTER = "local[*,4]"


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
