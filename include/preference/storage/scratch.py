"""Move partitions between S3 and a local scratch directory for Spark.

Spark's S3A connector is not available everywhere this runs, so a Spark job reads a partition
staged to local disk and writes its output locally; :func:`publish_directory` sends it back.
"""

from __future__ import annotations

import logging
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from include.preference.storage.partitions import Manifest, PartitionRef, require_manifest
from include.preference.storage.s3 import ObjectStore

log = logging.getLogger(__name__)


def stage_partition(store: ObjectStore, ref: PartitionRef, root: Path, manifest: Manifest | None = None) -> Path:
    """Download a published partition to ``root/<layer>/<table>/dt=<date>/``.

    The files keep the names they were published with (the version folder is dropped), so the
    directory reads like the partition itself. Files already present with the right size are kept.
    Pass the partition's ``manifest`` when it is already read; otherwise it is fetched.

    Returns:
        The local directory of the partition.

    Raises:
        PartitionNotFound: the partition has no manifest.
    """
    manifest = manifest or require_manifest(store, ref)
    target = root / ref.prefix
    target.mkdir(parents=True, exist_ok=True)
    for entry in manifest.files:
        local = target / entry.path.split("/", 1)[1]
        if local.exists() and local.stat().st_size == entry.bytes:
            continue
        store.get_file(ref.prefix + entry.path, local)
    log.info("staged %s to %s (%d files)", store.uri(ref.prefix), target, len(manifest.files))
    return target


@contextmanager
def scratch_directory(base: Path, label: str) -> Iterator[Path]:
    """A private scratch directory under ``base`` that is removed afterwards, even on failure."""
    base.mkdir(parents=True, exist_ok=True)
    path = Path(tempfile.mkdtemp(prefix=f"{label}-", dir=base))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)
