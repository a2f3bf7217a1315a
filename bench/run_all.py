"""Run every benchmark, check each recorded its ratios, and rewrite README.md's benchmark table.

    .venv/bin/python bench/run_all.py [--quick] [--only bench_scoring,bench_segments] [--dir bench]

``make bench`` runs this: each ``bench_*.py`` at its documented size in a process of its own (its
figures are not disturbed by the ones before it), each writing ``.local/bench/<name>.json``; when
all succeeded, the marked block of README.md is rendered from those files.

``--quick`` (``make bench QUICK=1``, and the test suite's smoke pass) runs each at a tiny size, one
after the other in this one process (one JVM start, one TensorFlow import), results under
``.local/bench/quick/``; it measures nothing and leaves the README alone. Either way the exit status
is 1 when a benchmark raised, exited non-zero, or finished without recording a ratio, and the
output names each such benchmark and why.
"""

from __future__ import annotations

import argparse
import faulthandler
import json
import os
import runpy
import subprocess
import sys
import time
import traceback
from pathlib import Path

import harness


def run_here(path: Path) -> None:
    """Run a benchmark script as ``__main__`` in this process with ``--quick``."""
    argv, environment = sys.argv, dict(os.environ)
    sys.argv = [str(path), "--quick"]
    try:
        runpy.run_path(str(path), run_name="__main__")
    except SystemExit as stop:
        if stop.code not in (None, 0):
            raise RuntimeError(f"exited with {stop.code!r}") from None
    finally:
        sys.argv = argv
        restore_environment(environment)


def restore_environment(environment: dict[str, str]) -> None:
    """Undo what one benchmark set (a lake's address) so the next one does not inherit it.

    Only the variables that changed are touched: clearing and refilling the whole environment calls
    unsetenv/setenv on every variable while TensorFlow's and tf.data's threads may be reading it
    (getenv is not safe against a concurrent setenv), which crashed the process with SIGSEGV.
    """
    for key in [k for k in os.environ if k not in environment]:
        del os.environ[key]
    for key, value in environment.items():
        if os.environ.get(key) != value:
            os.environ[key] = value


def run_apart(path: Path) -> None:
    """Run a benchmark script in a fresh process at its documented size."""
    # The script's own folder comes first on its path; the harness (and lake.py) are found beside it or here.
    paths = [str(harness.BENCH_DIR), os.environ.get("PYTHONPATH", "")]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in paths if p)}
    done = subprocess.run([sys.executable, str(path)], cwd=harness.PROJECT_ROOT, env=env, check=False)
    if done.returncode:
        raise RuntimeError(f"exited with {done.returncode}")


def fresh_result(name: str, quick: bool, since: float) -> dict | None:
    path = harness.results_dir(quick) / f"{name}.json"
    if not path.is_file() or path.stat().st_mtime < since:
        return None
    document = json.loads(path.read_text())
    return document if document.get("ratios") else None


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="tiny sizes, in this process; the README is left alone")
    parser.add_argument("--only", default="", help="comma-separated benchmark names (default: all)")
    parser.add_argument("--dir", type=Path, default=harness.BENCH_DIR, help="where the bench_*.py scripts are")
    parser.add_argument("--readme", type=Path, default=harness.PROJECT_ROOT / "README.md")
    args = parser.parse_args()
    faulthandler.enable()  # a crash in native code (TensorFlow, Arrow) prints every thread's Python stack

    folder = args.dir.resolve()
    names = harness.benchmark_names(folder)
    if args.only:
        wanted = [n.strip() for n in args.only.split(",") if n.strip()]
        unknown = sorted(set(wanted) - set(names))
        if unknown:
            print(f"no such benchmark in {folder}: {', '.join(unknown)} (have: {', '.join(names)})")
            return 2
        names = wanted
    if not names:
        print(f"no bench_*.py in {folder}")
        return 2
    for entry in (str(folder), str(harness.BENCH_DIR), str(harness.PROJECT_ROOT)):
        if entry not in sys.path:
            sys.path.insert(0, entry)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    if args.quick:
        # Tiny data in one short-lived driver: interpreted expressions and the quick compiler only cost
        # less than compiling (what the test suite's drivers use; a measured run keeps the defaults).
        quick_jvm = "-XX:TieredStopAtLevel=1 -XX:ReservedCodeCacheSize=240m -XX:+UseSerialGC -Xss4m"
        os.environ.setdefault("PREFERENCE_SPARK_INTERPRETED", "true")
        # Two shuffle partitions (one per core of a small machine), not eight: fewer tasks and fewer
        # Python workers for rows that fit one (what writes the training examples' shards).
        os.environ.setdefault("PREFERENCE_SPARK_SHUFFLE_PARTITIONS", "2")
        os.environ.setdefault("PREFERENCE_SPARK_DRIVER_JAVA_OPTIONS", quick_jvm)
        os.environ.setdefault("PREFERENCE_SPARK_EXECUTOR_JAVA_OPTIONS", quick_jvm)

    failures: dict[str, str] = {}
    timings: dict[str, float] = {}
    for name in names:
        print(f"=== {name}{' (quick)' if args.quick else ''}", flush=True)
        since = time.time() - 1.0  # file times are whole seconds on some file systems
        started = time.perf_counter()
        try:
            (run_here if args.quick else run_apart)(folder / f"{name}.py")
        except Exception as error:  # noqa: BLE001 - reported below and in the exit status
            traceback.print_exc()
            failures[name] = f"{type(error).__name__}: {error}"
        else:
            if fresh_result(name, args.quick, since) is None:
                failures[name] = (
                    f"finished without recording a ratio ({harness.results_dir(args.quick) / (name + '.json')} "
                    "not written: the script must end with harness.record)"
                )
        timings[name] = time.perf_counter() - started
        status = "FAILED" if name in failures else "ok"
        print(f"=== {name}: {status} in {timings[name]:.1f} s", flush=True)

    total = sum(timings.values())
    print(f"\n{len(names) - len(failures)} of {len(names)} benchmarks recorded their ratios in {total:.0f} s")
    for name, why in failures.items():
        print(f"FAILED {name}: {why}")
    if failures:
        return 1
    if not args.quick:
        results = []
        for name in harness.benchmark_names(folder):
            path = harness.results_dir(False) / f"{name}.json"
            if path.is_file():
                results.append(json.loads(path.read_text()))
        try:
            harness.rewrite_readme(args.readme, harness.render_table(results))
        except ValueError as error:
            print(f"README not rewritten: {error}")
            return 1
        print(f"{args.readme}: benchmark table rewritten from {len(results)} result files")
    return 0


if __name__ == "__main__":
    sys.exit(main())
