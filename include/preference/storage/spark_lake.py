"""Where a Spark job reads and writes: the lake bucket, through Spark's S3 connector (S3A).

A job's inputs are published partitions, read from exactly the files their manifests list
(``s3a://<bucket>/<layer>/<table>/dt=<day>/v-<digest>/...``). Its outputs go to a work area of its
own in the same bucket (``_work/<label>-<token>/<layer>/<table>/dt=<day>/``), written by the
executors through S3A, and are published from there by :func:`publish_staged` (a server-side copy
into the partition's version folder, the manifest last). Nothing is read from or written to the
driver's disk, so the same job runs on ``local[*]`` and on a cluster whose executors share nothing
with the driver but S3.

The work area also holds tables a job makes and reads back without publishing them (an
evaluation's validated days, a state read back to shorten the lineage). It is removed when the job
ends, failed or not. A killed driver leaves it behind; nothing but the job that made it reads
``_work/`` (a bucket lifecycle rule on that prefix may expire what is left).
"""

from __future__ import annotations

import datetime as dt
import io
import logging
import re
import uuid
from collections.abc import Iterable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from include.preference.errors import PartitionNotFound
from include.preference.storage.partitions import (
    Manifest,
    PartitionRef,
    is_data_file,
    parquet_bytes,
    parquet_footer,
    publish_staged,
)
from include.preference.storage.s3 import ObjectInfo, ObjectStore

if TYPE_CHECKING:
    import pyarrow as pa
    from pyspark.sql import DataFrame, SparkSession

log = logging.getLogger(__name__)

WORK_ROOT = "_work/"
# The day column a multi-day read adds, and the folder key of a multi-day write.
DAY = "day"
PARTITION_KEY = "dt"
# Output files are split by key hash (the same rows always give the same files), about this big.
FILE_BYTES = 256 * 1024 * 1024
MAX_FILES = 64
_DT = re.compile(r"/dt=(\d{4}-\d{2}-\d{2})/")
_LABEL = re.compile(r"[^a-z0-9_-]+")


def file_count(frame: "DataFrame") -> int:
    """Output files for ``frame``: one per FILE_BYTES of the optimizer's size estimate, at least one."""
    try:
        estimate = int(frame._jdf.queryExecution().optimizedPlan().stats().sizeInBytes().toString())
    except Exception:  # noqa: BLE001 - an estimate only; one file is always a valid layout
        log.debug("no size estimate for the output plan; writing one file", exc_info=True)
        return 1
    return max(1, min(MAX_FILES, -(-estimate // FILE_BYTES)))


def s3a_only(*uris: str) -> list[str]:
    """The URIs, checked to address S3 through S3A: a Spark job never reads or writes a local disk.

    Every Spark read and write of the project passes its paths through here (a test checks it).

    Raises:
        ValueError: a URI is a local path (or another filesystem).
    """
    local = [u for u in uris if not str(u).startswith("s3a://")]
    if local:
        raise ValueError(f"Spark reads and writes S3 only (s3a://...), not {local[0]!r}")
    return list(uris)


class SparkLake:
    """A Spark job's view of the lake: registered inputs, and a work area for its outputs.

    Args:
        store: the lake bucket.
        work: the work area's key prefix (ending with ``/``); see :func:`spark_lake`.
    """

    def __init__(self, store: ObjectStore, work: str) -> None:
        if not work.startswith(WORK_ROOT) or not work.endswith("/"):
            raise ValueError(f"a work area lives under {WORK_ROOT} and ends with /, got {work!r}")
        self.store = store
        self.work = work
        self._inputs: dict[tuple[str, str, dt.date], list[str]] = {}

    # -- inputs ------------------------------------------------------------------------------
    def add(self, ref: PartitionRef, manifest: Manifest) -> Manifest:
        """Register a published partition as an input: its manifest's Parquet files."""
        self._inputs[(ref.layer, ref.table, ref.date)] = [
            self.store.s3a(ref.prefix + entry.path) for entry in manifest.files if entry.path.endswith(".parquet")
        ]
        return manifest

    def add_files(self, ref: PartitionRef, uris: Sequence[str]) -> None:
        """Register Parquet files (``s3a://`` URIs in this lake's bucket) as the input ``ref``."""
        self._inputs[(ref.layer, ref.table, ref.date)] = s3a_only(*uris)

    def ready(self, spark: "SparkSession") -> "SparkSession":
        """Point ``spark``'s S3A at this lake's store (a no-op when it already does)."""
        from include.preference.spark import configure_s3a

        configure_s3a(spark, self.store.settings)
        return spark

    def prefix(self, ref: PartitionRef, sub: str = "") -> str:
        """The key prefix of ``ref`` (and of ``sub`` inside it) in the work area."""
        return self.work + ref.prefix + (sub.strip("/") + "/" if sub else "")

    def uri(self, ref: PartitionRef, sub: str = "") -> str:
        """The ``s3a://`` URI of ``ref`` (and ``sub``) in the work area: where a job writes it."""
        return self.store.s3a(self.prefix(ref, sub))

    def written(self, ref: PartitionRef, sub: str = "") -> list[ObjectInfo]:
        """The data files written under ``ref`` (and ``sub``) in the work area."""
        prefix = self.prefix(ref, sub)
        return [o for o in self.store.list_objects(prefix) if is_data_file(o.key[len(prefix) :])]

    def files(self, ref: PartitionRef) -> list[str]:
        """The Parquet files of ``ref``: a registered input's, else what the work area holds."""
        registered = self._inputs.get((ref.layer, ref.table, ref.date))
        if registered is not None:
            return list(registered)
        return [self.store.s3a(o.key) for o in self.written(ref) if o.key.endswith(".parquet")]

    def days(self, layer: str, table: str, until: dt.date | None = None) -> list[dt.date]:
        """Days of a table among the registered inputs and in the work area, up to ``until``."""
        found = {day for (lay, tab, day) in self._inputs if (lay, tab) == (layer, table)}
        base = PartitionRef(layer, table, dt.date(2000, 1, 1)).prefix.rsplit(f"{PARTITION_KEY}=", 1)[0]
        for prefix in self.store.list_prefixes(self.work + base):
            match = re.search(r"dt=(\d{4}-\d{2}-\d{2})/$", prefix)
            if match:
                found.add(dt.date.fromisoformat(match.group(1)))
        return sorted(d for d in found if until is None or d <= until)

    def read(self, spark: "SparkSession", ref: PartitionRef) -> "DataFrame | None":
        """A partition as a DataFrame, or None when there is none."""
        files = self.files(ref)
        return self.ready(spark).read.parquet(*s3a_only(*files)) if files else None

    def need(self, spark: "SparkSession", ref: PartitionRef, why: str) -> "DataFrame":
        """A partition as a DataFrame; raises :class:`PartitionNotFound` naming ``why`` when absent."""
        frame = self.read(spark, ref)
        if frame is None:
            raise PartitionNotFound(f"{ref.prefix} is not an input of this job; {why}")
        return frame

    def read_days(
        self, spark: "SparkSession", layer: str, table: str, days: Iterable[dt.date], *, with_day: bool = False
    ) -> "DataFrame":
        """The partitions of ``days`` as one DataFrame (one scan), with their day as ``DAY`` if asked.

        One scan over every day's files, not a union of one read per day: a union of hundreds of
        scans costs more to plan than to run, and makes a task per file.

        Raises:
            PartitionNotFound: a day has no partition (named with the first missing day).
        """
        from pyspark.sql import functions as F

        days = sorted(set(days))
        if not days:
            raise ValueError(f"read_days of {layer}/{table} needs at least one day")
        files = {day: self.files(PartitionRef(layer, table, day)) for day in days}
        missing = [day for day, found in files.items() if not found]
        if missing:
            raise PartitionNotFound(
                f"{layer}/{table}/dt={missing[0]} is not an input of this job "
                f"({len(missing)} of {len(days)} days missing)"
            )
        frame = self.ready(spark).read.parquet(*s3a_only(*(path for day in days for path in files[day])))
        if with_day:
            # Every file's path names its day (…/dt=YYYY-MM-DD/…), published or in the work area.
            found = F.regexp_extract(F.col("_metadata.file_path"), _DT.pattern, 1)
            frame = frame.withColumn(DAY, F.to_date(found))
        return frame

    # -- outputs -----------------------------------------------------------------------------
    def write_table(
        self,
        frame: "DataFrame",
        ref: PartitionRef,
        keys: Iterable[str],
        *,
        sub: str = "",
        files: int | None = None,
        order: Iterable[Any] = (),
    ) -> int:
        """Write ``frame`` as Parquet to ``ref`` (``sub``) in the work area, reproducibly; returns its rows.

        Rows are split into files by a hash of the keys and sorted by key inside each file (or by
        ``order``, e.g. a seeded shuffle), so the same rows always give byte-identical files, and
        publishing numbers the files in Spark's task order. The number of files comes from the
        plan's size estimate; the row count from the written files' footers.
        """
        keys = list(keys)
        self.ready(frame.sparkSession)
        files = files or file_count(frame)
        target = self.uri(ref, sub)
        ordered = frame.repartition(files, *keys).sortWithinPartitions(*(list(order) or keys))
        ordered.write.mode("overwrite").option("compression", "zstd").parquet(*s3a_only(target))
        written = [o for o in self.written(ref, sub) if o.key.endswith(".parquet")]
        if not written:
            # Spark writes no file for an empty result: keep the schema in one empty file.
            empty = frame.sparkSession.createDataFrame([], frame.schema).coalesce(1)
            empty.write.mode("overwrite").parquet(*s3a_only(target))
            written = [o for o in self.written(ref, sub) if o.key.endswith(".parquet")]
        return self.rows_of(written)

    def write_days(self, frame: "DataFrame", layer: str, table: str, keys: Iterable[str]) -> dict[str, int]:
        """Write a multi-day table (a ``DAY`` column) as one partition per day, one file each.

        One Spark job for all days, each day's rows sorted by key. Returns day -> rows written.
        """
        from pyspark.sql import functions as F

        keys = list(keys)
        self.ready(frame.sparkSession)
        base = PartitionRef(layer, table, dt.date(2000, 1, 1)).prefix.rsplit(f"{PARTITION_KEY}=", 1)[0]
        (
            frame.withColumn(PARTITION_KEY, F.date_format(DAY, "yyyy-MM-dd"))
            .drop(DAY)
            .repartition(PARTITION_KEY)
            .sortWithinPartitions(PARTITION_KEY, *keys)
            .write.mode("overwrite")
            .option("compression", "zstd")
            .partitionBy(PARTITION_KEY)
            .parquet(*s3a_only(self.store.s3a(self.work + base)))
        )
        written: dict[str, int] = {}
        for day in self.days(layer, table):
            ref = PartitionRef(layer, table, day)
            if (layer, table, day) in self._inputs:
                continue
            parts = [o for o in self.written(ref) if o.key.endswith(".parquet")]
            if len(parts) != 1:
                raise RuntimeError(f"expected one file for {table} {day}, Spark wrote {len(parts)}")
            written[day.isoformat()] = self.rows_of(parts)
        return written

    def put_table(self, ref: PartitionRef, table: "pa.Table", name: str = "part-00000.parquet") -> None:
        """Put an Arrow table (made by the driver, small) into the work area as one Parquet file."""
        self.store.put_bytes(self.prefix(ref) + name, parquet_bytes(table))

    def put_bytes(self, ref: PartitionRef, name: str, body: bytes) -> None:
        """Put a small file (e.g. a schema) into ``ref`` in the work area."""
        self.store.put_bytes(self.prefix(ref) + name, body)

    def rows(self, ref: PartitionRef, sub: str = "") -> int:
        """Rows of the Parquet files under ``ref`` (``sub``) in the work area (from their footers)."""
        return self.rows_of([o for o in self.written(ref, sub) if o.key.endswith(".parquet")])

    def rows_of(self, objects: Sequence[ObjectInfo]) -> int:
        if len(objects) <= 1:
            return sum(parquet_footer(self.store, o.key, o.size).num_rows for o in objects)
        with ThreadPoolExecutor(max_workers=min(16, len(objects))) as pool:
            return sum(pool.map(lambda o: parquet_footer(self.store, o.key, o.size).num_rows, objects))

    def read_arrow(self, ref: PartitionRef, columns: Sequence[str] | None = None) -> "pa.Table":
        """A small partition (a summary, a sample) as one Arrow table on this process."""
        import pyarrow as pa
        import pyarrow.parquet as pq

        keys = [f[len(self.store.s3a()) :] for f in self.files(ref)]
        if not keys:
            raise PartitionNotFound(f"{ref.prefix} is not an input or output of this job")
        return pa.concat_tables(pq.read_table(io.BytesIO(self.store.get_bytes(k)), columns=columns) for k in keys)

    def publish(self, ref: PartitionRef, **kwargs: Any) -> Manifest:
        """Publish ``ref`` from the work area (see :func:`publish_staged` for the arguments)."""
        return publish_staged(self.store, ref, self.prefix(ref), **kwargs)

    def remove(self) -> None:
        """Delete the work area."""
        keys = [o.key for o in self.store.list_objects(self.work)]
        if keys:
            self.store.delete_keys(keys)


@contextmanager
def spark_lake(
    store: ObjectStore, label: str, inputs: Mapping[PartitionRef, Manifest] | None = None
) -> Iterator[SparkLake]:
    """A :class:`SparkLake` with a fresh work area, removed afterwards (even on failure)."""
    clean = _LABEL.sub("-", label.lower()).strip("-") or "job"
    lake = SparkLake(store, f"{WORK_ROOT}{clean}-{uuid.uuid4().hex[:12]}/")
    for ref, manifest in (inputs or {}).items():
        lake.add(ref, manifest)
    try:
        yield lake
    finally:
        try:
            lake.remove()
        except Exception:  # noqa: BLE001 - the job's own error matters more than a leftover work area
            log.warning("could not remove the work area %s", store.uri(lake.work), exc_info=True)
