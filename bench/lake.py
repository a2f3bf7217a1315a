"""A throwaway S3 server and bucket for benchmarks (started here, stopped by PID afterwards)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from include.preference.config import S3Settings
from include.preference.services import Runtime, ServiceManager, ephemeral_runtime
from include.preference.storage import ObjectStore


@contextmanager
def running_lake(home: Path, bucket: str = "bench") -> Iterator[tuple[Runtime, ObjectStore]]:
    """SeaweedFS on free ports under ``home`` and an empty ``bucket`` in it."""
    runtime = ephemeral_runtime(home)
    manager = ServiceManager(runtime)
    manager.start("s3")
    try:
        store = ObjectStore(
            S3Settings(
                endpoint_url=runtime.s3_endpoint,
                access_key_id=runtime.access_key_id,
                secret_access_key=runtime.secret_access_key,
                bucket=bucket,
            )
        )
        store.ensure_bucket()
        yield runtime, store
    finally:
        manager.stop("s3")
