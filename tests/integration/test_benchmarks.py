"""The benchmarks keep running: every one at its quick size records its ratios, a broken one fails
the pass by name, and the README's table is what the renderer writes from the result files."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from tests.conftest import PROJECT_ROOT, SHARED_DATA

pytestmark = [pytest.mark.integration, pytest.mark.slow]

RUN_ALL = PROJECT_ROOT / "bench" / "run_all.py"
sys.path.insert(0, str(PROJECT_ROOT / "bench"))
import harness  # noqa: E402


def run_all(*args: str, results: Path, timeout: int = 600) -> subprocess.CompletedProcess:
    env = {**os.environ, "PREFERENCE_BENCH_DIR": str(results)}
    return subprocess.run(
        [sys.executable, str(RUN_ALL), *args],
        cwd=PROJECT_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


@pytest.mark.skipif(not (SHARED_DATA / "online_retail_dev.csv.gz").exists(), reason="needs the shared sample")
def test_every_benchmark_runs_at_its_quick_size_and_records_its_ratios(tmp_path):
    done = run_all("--quick", results=tmp_path)
    assert done.returncode == 0, done.stdout[-6000:] + done.stderr[-6000:]
    names = harness.benchmark_names()
    assert len(names) >= 11
    for name in names:
        result = json.loads((tmp_path / "quick" / f"{name}.json").read_text())
        assert result["quick"] is True and result["name"] == name
        assert result["ratios"] and all(value >= 0 for value in result["ratios"].values()), result
        assert (result["goal"] is None) == (result["met"] is None)
        assert result["machine"]["cores"] == os.cpu_count() and result["code"]["commit"] != "unknown"
        assert f"=== {name} (quick)" in done.stdout and f"=== {name}: ok" in done.stdout
    assert f"{len(names)} of {len(names)} benchmarks recorded their ratios" in done.stdout
    assert not (tmp_path / names[0]).with_suffix(".json").exists()  # quick results never mix with measured ones


GOOD = """
import harness

args = harness.parser(__doc__).parse_args()
harness.record("bench_good", args, title="a / b", result="2.00x", ratios={"a / b": 2.0}, goal="at least 1x", met=True)
"""
RAISES = """
import harness

args = harness.parser(__doc__).parse_args()
raise RuntimeError("deliberately broken")
"""
SILENT = """
import harness

args = harness.parser(__doc__).parse_args()
print("measured something, recorded nothing")
"""
NO_RATIO = """
import harness

args = harness.parser(__doc__).parse_args()
harness.record("bench_no_ratio", args, title="a / b", result="-", ratios={})
"""


def test_a_broken_benchmark_fails_the_pass_and_is_named_with_its_reason(tmp_path):
    folder = tmp_path / "bench"
    folder.mkdir()
    for name, body in {
        "bench_good": GOOD,
        "bench_raises": RAISES,
        "bench_silent": SILENT,
        "bench_no_ratio": NO_RATIO,
    }.items():
        (folder / f"{name}.py").write_text(textwrap.dedent(body))
    done = run_all("--quick", "--dir", str(folder), results=tmp_path / "results", timeout=120)
    assert done.returncode == 1, done.stdout + done.stderr
    assert "1 of 4 benchmarks recorded their ratios" in done.stdout
    assert "FAILED bench_raises: RuntimeError: deliberately broken" in done.stdout
    assert "FAILED bench_silent: finished without recording a ratio" in done.stdout
    assert "FAILED bench_no_ratio: ValueError: benchmark bench_no_ratio: no ratio measured" in done.stdout
    assert "FAILED bench_good" not in done.stdout
    assert json.loads((tmp_path / "results" / "quick" / "bench_good.json").read_text())["ratios"] == {"a / b": 2.0}

    only_good = run_all("--quick", "--dir", str(folder), "--only", "bench_good", results=tmp_path / "r2", timeout=120)
    assert only_good.returncode == 0, only_good.stdout + only_good.stderr


def test_a_full_run_rewrites_only_the_marked_table_of_the_readme(tmp_path):
    folder = tmp_path / "bench"
    folder.mkdir()
    (folder / "bench_good.py").write_text(textwrap.dedent(GOOD))
    readme = tmp_path / "README.md"
    readme.write_text(f"# Title\n\nbefore\n\n{harness.TABLE_BEGIN}\nstale figures\n{harness.TABLE_END}\n\nafter\n")
    done = run_all("--dir", str(folder), "--readme", str(readme), results=tmp_path / "results", timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    text = readme.read_text()
    assert text.startswith("# Title\n\nbefore\n\n") and text.endswith("\n\nafter\n")
    assert "stale figures" not in text
    assert "| `bench_good` | a / b | 2.00x | at least 1x | met |" in text
    result = json.loads((tmp_path / "results" / "bench_good.json").read_text())
    assert harness.render_table([result]) in text

    readme.write_text("# no markers\n")
    again = run_all("--dir", str(folder), "--readme", str(readme), results=tmp_path / "results", timeout=120)
    assert again.returncode == 1 and "README not rewritten" in again.stdout and "table markers" in again.stdout


def test_the_readme_holds_one_rendered_benchmark_table():
    text = (PROJECT_ROOT / "README.md").read_text()
    assert text.count(harness.TABLE_BEGIN) == 1 and text.count(harness.TABLE_END) == 1
    table = text.split(harness.TABLE_BEGIN)[1].split(harness.TABLE_END)[0]
    rows = [line for line in table.splitlines() if line.startswith("| `bench_")]
    assert sorted(row.split("`")[1] for row in rows) == harness.benchmark_names()
