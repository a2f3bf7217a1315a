"""A private scratch directory of this process (plots, Data Docs, a downloaded model): never Spark's.

Spark jobs read and write the lake through :mod:`include.preference.storage.spark_lake`; what a
task makes on its own (a PNG, an HTML site) is written here first and published from here.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


@contextmanager
def scratch_directory(base: Path, label: str) -> Iterator[Path]:
    """A private scratch directory under ``base`` that is removed afterwards, even on failure."""
    base.mkdir(parents=True, exist_ok=True)
    path = Path(tempfile.mkdtemp(prefix=f"{label}-", dir=base))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)
