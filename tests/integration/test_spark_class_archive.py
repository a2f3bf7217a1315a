"""The Spark driver's class archive: written by `make install`, mapped by every driver it starts."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from include.preference.spark import DEFAULT_CLASS_ARCHIVE, class_archive
from tests.conftest import PROJECT_ROOT

pytestmark = pytest.mark.integration

# A driver that must map the archive: with -Xshare:on the JVM refuses to start when it cannot.
START_A_DRIVER = """
from include.preference.spark import spark_session
session = spark_session("archive-check", master="local[1]")
args = session.sparkContext._jvm.java.lang.management.ManagementFactory.getRuntimeMXBean().getInputArguments()
print("ARGS", " ".join(str(a) for a in args))
print("SUM", session.range(10).groupBy().sum("id").collect()[0][0])
"""


def test_the_archive_is_named_only_when_the_file_exists(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    archive = tmp_path / "driver.jsa"
    monkeypatch.setenv("PREFERENCE_SPARK_CLASS_ARCHIVE", str(archive))
    assert class_archive() is None  # a missing file would cost the JVM its base archive too
    archive.write_bytes(b"x")
    assert class_archive() == archive
    monkeypatch.setenv("PREFERENCE_SPARK_CLASS_ARCHIVE", "none")
    assert class_archive() is None


@pytest.mark.slow
def test_make_install_wrote_an_archive_that_a_driver_maps():
    assert DEFAULT_CLASS_ARCHIVE.is_file(), f"{DEFAULT_CLASS_ARCHIVE} is missing: `make install` writes it"
    env = {
        **os.environ,
        "PREFERENCE_SPARK_CLASS_ARCHIVE": str(DEFAULT_CLASS_ARCHIVE),
        "PREFERENCE_SPARK_DRIVER_JAVA_OPTIONS": "-Xshare:on",
    }
    done = subprocess.run(
        [sys.executable, "-c", START_A_DRIVER], cwd=PROJECT_ROOT, env=env, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr[-3000:]
    args = next(line for line in done.stdout.splitlines() if line.startswith("ARGS"))
    assert f"-XX:SharedArchiveFile={DEFAULT_CLASS_ARCHIVE}" in args and "-Xshare:on" in args
    assert "SUM 45" in done.stdout
