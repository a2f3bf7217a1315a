"""Start-up of a Spark driver as an Airflow task pays it: a fresh process, a session, a first job.

    .venv/bin/python bench/bench_spark_start.py [--repeat 3]

Every task that uses Spark starts its own driver JVM. Prints the seconds from a fresh Python
process to the end of its first small job (a Parquet round trip and an aggregation), best of
``--repeat``, with the class archive that `make install` writes (.local/jvm/spark-driver.jsa)
against without it, and the ratio.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(PROJECT_ROOT))

import harness  # noqa: E402

from include.preference.spark import DEFAULT_CLASS_ARCHIVE  # noqa: E402

FIRST_JOB = """
import tempfile
from include.preference.spark import spark_session
session = spark_session("bench-start")
with tempfile.TemporaryDirectory() as scratch:
    session.range(1000).selectExpr("id % 7 AS k", "id AS v").write.parquet(scratch + "/t")
    session.read.parquet(scratch + "/t").groupBy("k").sum("v").collect()
"""


def start_seconds(archive: str) -> float:
    env = {**os.environ, "PREFERENCE_SPARK_CLASS_ARCHIVE": archive}
    began = time.perf_counter()
    subprocess.run([sys.executable, "-c", FIRST_JOB], cwd=PROJECT_ROOT, env=env, check=True, capture_output=True)
    return time.perf_counter() - began


def main() -> None:
    parser = harness.parser(__doc__)
    parser.add_argument("--repeat", type=int, default=3)
    args = harness.pick(parser.parse_args(), repeat=1)
    if not DEFAULT_CLASS_ARCHIVE.is_file():
        raise SystemExit(f"{DEFAULT_CLASS_ARCHIVE} is missing: run `make install` first")
    without = min(start_seconds("none") for _ in range(args.repeat))
    with_archive = min(start_seconds(str(DEFAULT_CLASS_ARCHIVE)) for _ in range(args.repeat))
    print(f"cpus: {os.cpu_count()}, best of {args.repeat}, fresh process to the end of its first job")
    print(f"without the class archive: {without:6.1f} s")
    print(f"with the class archive:    {with_archive:6.1f} s")
    print(f"ratio (without / with):    {without / with_archive:6.2f}x")
    ratio = without / with_archive
    harness.record(
        "bench_spark_start",
        args,
        title="a task's Spark driver, fresh process to the end of its first job (Parquet round trip, "
        "aggregation): without / with the class archive",
        result=f"{ratio:.2f}x ({without:.1f} s vs {with_archive:.1f} s, best of {args.repeat})",
        ratios={"without / with the archive": ratio},
        goal="at least 1.2x",
        met=ratio >= 1.2,
        seconds={"without": without, "with": with_archive},
        sizes={"repeat": args.repeat},
    )


if __name__ == "__main__":
    main()
