"""What every benchmark shares: its size switch, its result file, the README table made from them.

A benchmark script parses its arguments with :func:`parser` (which adds ``--quick``: the same code
at a tiny size, for the test suite's smoke pass) and ends with :func:`record`, which prints its
ratios and writes ``<results>/<name>.json``: the ratios and seconds it measured, the sizes, its goal
and whether it met it, and the facts of the machine and code it ran on. Results go to
``.local/bench/`` (``.local/bench/quick/`` for quick runs; ``PREFERENCE_BENCH_DIR`` overrides).

``python bench/run_all.py`` runs every benchmark and rewrites the marked block of README.md from
the result files (:func:`render_table`); nobody types a figure into it.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import math
import os
import platform
import subprocess
import sys
from collections.abc import Mapping
from importlib import metadata
from pathlib import Path
from typing import Any

PROJECT_ROOT = Path(__file__).resolve().parents[1]
BENCH_DIR = PROJECT_ROOT / "bench"
TABLE_BEGIN = "<!-- benchmark table: written by bench/run_all.py from .local/bench/*.json; do not edit -->"
TABLE_END = "<!-- end of benchmark table -->"
PACKAGES = ("pyspark", "tensorflow-cpu", "tensorflow", "keras", "numpy", "pyarrow", "great-expectations", "mlflow")


def results_dir(quick: bool) -> Path:
    base = Path(os.environ.get("PREFERENCE_BENCH_DIR") or PROJECT_ROOT / ".local" / "bench")
    return base / "quick" if quick else base


def parser(doc: str | None) -> argparse.ArgumentParser:
    """The benchmark's argument parser, with ``--quick`` (tiny sizes) already on it."""
    out = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    out.add_argument(
        "--quick", action="store_true", help="the same code at a tiny size: checks the benchmark runs, measures nothing"
    )
    return out


def pick(args: argparse.Namespace, **quick_sizes: Any) -> argparse.Namespace:
    """``args`` with the given sizes in place of the documented ones when ``--quick`` is set."""
    if args.quick:
        for name, value in quick_sizes.items():
            if not hasattr(args, name):
                raise AttributeError(f"quick size for unknown argument {name!r}")
            setattr(args, name, value)
    return args


def machine() -> dict[str, Any]:
    """Cores, memory, Python, Java and the versions of the packages that decide the figures."""
    memory = None
    with contextlib.suppress(ValueError, OSError, AttributeError):
        memory = round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1)
    versions = {}
    for package in PACKAGES:
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            continue
    java = subprocess.run(["java", "-version"], capture_output=True, text=True, check=False)
    return {
        "cores": os.cpu_count(),
        "memory_gib": memory,
        "platform": platform.platform(),
        "python": platform.python_version(),
        "java": (java.stderr.splitlines() or ["unknown"])[0],
        "packages": versions,
    }


def commit() -> dict[str, Any]:
    """The code the figures belong to: HEAD and whether the work tree differed from it."""

    def git(*args: str) -> str:
        done = subprocess.run(["git", *args], cwd=PROJECT_ROOT, capture_output=True, text=True, check=False)
        return done.stdout.strip() if done.returncode == 0 else ""

    return {"commit": git("rev-parse", "--short=12", "HEAD") or "unknown", "dirty": bool(git("status", "--porcelain"))}


def record(
    name: str,
    args: argparse.Namespace,
    *,
    title: str,
    result: str,
    ratios: Mapping[str, float],
    goal: str | None = None,
    met: bool | None = None,
    seconds: Mapping[str, float] | None = None,
    sizes: Mapping[str, Any] | None = None,
) -> Path:
    """Print the ratios and write the benchmark's result file; returns its path.

    ``title`` names what is compared (the README table's first column), ``result`` says what came
    out in words and numbers (its second), ``ratios`` are the figures the goal is about (at least
    one, each finite and not negative), ``goal`` the target in words (``"<= 1.2x"``) and ``met``
    whether this run reached it; a benchmark without a target leaves both ``None``.
    """
    if not ratios:
        raise ValueError(f"benchmark {name}: no ratio measured")
    bad = {key: value for key, value in ratios.items() if not (math.isfinite(value) and value >= 0)}
    if bad:
        raise ValueError(f"benchmark {name}: ratios must be finite and not negative, got {bad}")
    if (goal is None) != (met is None):
        raise ValueError(f"benchmark {name}: a goal needs met (and met a goal)")
    document = {
        "name": name,
        "title": title,
        "result": result,
        "ratios": {key: round(float(value), 4) for key, value in ratios.items()},
        "goal": goal,
        "met": met,
        "seconds": {key: round(float(value), 3) for key, value in (seconds or {}).items()},
        "sizes": dict(sizes or {}),
        "quick": bool(args.quick),
        "arguments": {key: _plain(value) for key, value in vars(args).items()},
        "finished_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "code": commit(),
        "machine": machine(),
    }
    for key, value in document["ratios"].items():
        print(f"ratio {key}: {value:.2f}x")
    if goal is not None:
        print(f"goal {goal}: {'met' if met else 'not met'}")
    folder = results_dir(args.quick)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}.json"
    path.write_text(json.dumps(document, indent=2, sort_keys=False) + "\n")
    print(f"result: {path}")
    return path


def _plain(value: Any) -> Any:
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    return str(value)


def benchmark_names(folder: Path = BENCH_DIR) -> list[str]:
    """The benchmarks in ``folder``: every ``bench_*.py``, in name order."""
    return sorted(path.stem for path in folder.glob("bench_*.py"))


def render_table(results: list[dict[str, Any]]) -> str:
    """The README's benchmark block: one row per result, then the machine and code they ran on."""
    lines = [
        TABLE_BEGIN,
        "",
        "| benchmark | what is compared | result | goal | met |",
        "|---|---|---|---|---|",
    ]
    for doc in results:
        met = "-" if doc["met"] is None else ("met" if doc["met"] else "**not met**")
        lines.append(f"| `{doc['name']}` | {doc['title']} | {doc['result']} | {doc['goal'] or '-'} | {met} |")
    lines.append("")
    machines = {json.dumps(doc["machine"], sort_keys=True) for doc in results}
    commits = sorted({doc["code"]["commit"] + (" (modified)" if doc["code"]["dirty"] else "") for doc in results})
    for facts in sorted(machines):
        m = json.loads(facts)
        packages = ", ".join(f"{k} {v}" for k, v in m["packages"].items())
        lines.append(
            f"Measured on {m['cores']} cores, {m['memory_gib']} GiB, Python {m['python']}, {m['java']}; {packages}."
        )
    first = min(doc["finished_at"] for doc in results) if results else "-"
    last = max(doc["finished_at"] for doc in results) if results else "-"
    lines.append(f"Code: {', '.join(commits) or '-'}; runs finished {first} to {last}.")
    lines.append("")
    lines.append(TABLE_END)
    return "\n".join(lines)


def rewrite_readme(readme: Path, table: str) -> None:
    """Replace the marked block of ``readme`` with ``table`` (the markers must be there once each)."""
    text = readme.read_text()
    if text.count(TABLE_BEGIN) != 1 or text.count(TABLE_END) != 1:
        raise ValueError(
            f"{readme} must hold the benchmark table markers once each ({TABLE_BEGIN!r} ... {TABLE_END!r})"
        )
    before, rest = text.split(TABLE_BEGIN)
    _, after = rest.split(TABLE_END)
    readme.write_text(before + table + after)


if __name__ == "__main__":  # pragma: no cover - a module, not a benchmark
    sys.exit("bench/harness.py is imported by the benchmarks; run bench/run_all.py")
