"""Date partitions of the lake, published atomically behind a manifest.

Layout of one partition::

    <layer>/<table>/dt=YYYY-MM-DD/_MANIFEST.json          the commit point, written last
    <layer>/<table>/dt=YYYY-MM-DD/v-<digest>/<files...>   the published version's files

A publish uploads every file into a version folder named by the digest of the whole content
(the staging prefix), then writes ``_MANIFEST.json``, then deletes every other version folder of
that partition. Readers follow the manifest only, so:

* a publish killed before its manifest leaves nothing visible (first publish) or leaves the
  previous version visible and intact (a rerun);
* publishing the same content again writes the same keys and a byte-identical manifest;
* partitions of different dates share no key, so concurrent publishes do not interfere.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import io
import json
import logging
import re
from collections.abc import Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

from include.preference.errors import ObjectNotFound, PartitionNotFound, StorageError
from include.preference.storage.s3 import ObjectStore

if TYPE_CHECKING:
    import pyarrow as pa
    import pyarrow.parquet as pq

log = logging.getLogger(__name__)

MANIFEST_NAME = "_MANIFEST.json"
MANIFEST_FORMAT_VERSION = 1
LAYERS = ("raw", "quarantine", "validated", "features", "training", "scores", "segments", "reports")
# Files a Spark job leaves next to its output that are not data.
SPARK_SIDE_FILES = re.compile(r"(^|/)(_SUCCESS|_committed_.*|_started_.*|\..*\.crc|\.[^/]*)$")
_NAME = re.compile(r"^[a-z0-9][a-z0-9_\-]*$")


@dataclass(frozen=True, order=True)
class PartitionRef:
    """One date partition: ``<layer>/<table>/dt=<date>/`` (``table`` may be empty, e.g. training)."""

    layer: str
    table: str
    date: dt.date

    def __post_init__(self) -> None:
        if self.layer not in LAYERS:
            raise ValueError(f"unknown layer {self.layer!r}; expected one of {', '.join(LAYERS)}")
        for part in filter(None, self.table.split("/")):
            if not _NAME.match(part):
                raise ValueError(f"table name {self.table!r} must be lower-case letters, digits, _ and -")
        if not isinstance(self.date, dt.date) or isinstance(self.date, dt.datetime):
            raise TypeError(f"date must be a datetime.date, got {type(self.date).__name__}")

    @property
    def prefix(self) -> str:
        table = f"{self.table}/" if self.table else ""
        return f"{self.layer}/{table}dt={self.date.isoformat()}/"

    @property
    def manifest_key(self) -> str:
        return self.prefix + MANIFEST_NAME


@dataclass(frozen=True)
class FileEntry:
    """One published file, relative to the partition prefix."""

    path: str
    bytes: int
    sha256: str | None = None
    rows: int | None = None
    # Files a Spark job wrote straight to S3 are known by their ETag (a digest S3 computed from the
    # content as it was uploaded), not by a SHA-256 that would mean reading them back.
    etag: str | None = None


@dataclass(frozen=True)
class Manifest:
    """What a partition holds and where it came from."""

    layer: str
    table: str
    logical_date: str
    version: str
    files: tuple[FileEntry, ...]
    row_count: int | None
    schema: Mapping[str, Any]
    upstream: tuple[Mapping[str, Any], ...]
    code_version: str
    run_id: str
    extra: Mapping[str, Any] = field(default_factory=dict)
    format_version: int = MANIFEST_FORMAT_VERSION

    def to_json(self) -> bytes:
        """Canonical JSON (sorted keys): equal manifests are equal bytes."""
        return (json.dumps(asdict(self), sort_keys=True, indent=2, default=str) + "\n").encode()

    @classmethod
    def from_json(cls, body: bytes) -> "Manifest":
        data = json.loads(body)
        data["files"] = tuple(FileEntry(**f) for f in data["files"])
        data["upstream"] = tuple(data.get("upstream", ()))
        return cls(**data)

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.to_json()).hexdigest()


@dataclass(frozen=True)
class PartFile:
    """A file to publish: a name relative to the partition, its bytes, and its row count if tabular."""

    path: str
    body: bytes
    rows: int | None = None


def parquet_bytes(table: "pa.Table") -> bytes:
    """Serialise a table to Parquet deterministically (same table, same bytes)."""
    import pyarrow.parquet as pq

    buffer = io.BytesIO()
    pq.write_table(table, buffer, compression="zstd", write_statistics=True)
    return buffer.getvalue()


def schema_of(schema: "pa.Schema") -> dict[str, Any]:
    """A JSON-friendly description of an Arrow schema, recorded in manifests."""
    return {"columns": [{"name": f.name, "type": str(f.type), "nullable": f.nullable} for f in schema]}


def upstream_entry(store: ObjectStore, ref: PartitionRef, manifest: Manifest | None = None) -> dict[str, Any]:
    """Reference an input partition in a manifest: its URI and its manifest's hash.

    Pass the input's ``manifest`` when it is already read; otherwise it is fetched.

    Raises:
        PartitionNotFound: the input has no manifest.
    """
    manifest = manifest or read_manifest(store, ref)
    if manifest is None:
        raise PartitionNotFound(f"upstream partition {store.uri(ref.prefix)} has no manifest")
    return {"uri": store.uri(ref.manifest_key), "sha256": manifest.sha256}


def _version_digest(parts: Sequence[PartFile]) -> str:
    digest = hashlib.sha256()
    for part in sorted(parts, key=lambda p: p.path):
        digest.update(part.path.encode() + b"\0" + hashlib.sha256(part.body).digest())
    return digest.hexdigest()[:16]


def publish_files(
    store: ObjectStore,
    ref: PartitionRef,
    parts: Sequence[PartFile],
    *,
    run_id: str,
    code_version: str,
    schema: Mapping[str, Any] | None = None,
    upstream: Iterable[Mapping[str, Any]] = (),
    extra: Mapping[str, Any] | None = None,
    if_changed: bool = False,
) -> Manifest:
    """Publish files as the partition ``ref``, replacing any earlier version atomically.

    Args:
        store: the lake.
        ref: the partition to (re)write.
        parts: the files; names relative to the partition, unique.
        run_id: the Airflow run (or CLI run) that produced them.
        code_version: the code version that produced them.
        schema: column descriptions for tabular data.
        upstream: entries from :func:`upstream_entry` for the inputs.
        extra: small stage-specific facts (e.g. validated and quarantined counts).
        if_changed: leave the partition as it is when its published version has the same content
            (its manifest, run id included, is kept).

    Returns:
        The manifest that was written (or kept).
    """
    names = [p.path for p in parts]
    if len(set(names)) != len(names):
        raise ValueError(f"duplicate file names in publish of {ref.prefix}")
    for name in names:
        if name.startswith("/") or ".." in name.split("/") or name == MANIFEST_NAME:
            raise ValueError(f"file name {name!r} is not a plain relative path")
    version = f"v-{_version_digest(parts)}"
    if if_changed and (current := read_manifest(store, ref)) is not None and current.version == version:
        log.info("%s already holds %s; kept", store.uri(ref.prefix), version)
        return current
    entries = []
    for part in sorted(parts, key=lambda p: p.path):
        relative = f"{version}/{part.path}"
        store.put_bytes(ref.prefix + relative, part.body)
        entries.append(
            FileEntry(path=relative, bytes=len(part.body), sha256=hashlib.sha256(part.body).hexdigest(), rows=part.rows)
        )
    return _write_manifest(store, ref, version, entries, run_id, code_version, schema, upstream, extra)


def publish_table(
    store: ObjectStore,
    ref: PartitionRef,
    table: "pa.Table",
    *,
    run_id: str,
    code_version: str,
    upstream: Iterable[Mapping[str, Any]] = (),
    extra: Mapping[str, Any] | None = None,
    rows_per_file: int = 1_000_000,
) -> Manifest:
    """Publish an Arrow table as Parquet files of at most ``rows_per_file`` rows."""
    parts = []
    offsets = range(0, max(table.num_rows, 1), rows_per_file)
    for index, offset in enumerate(offsets):
        chunk = table.slice(offset, rows_per_file)
        parts.append(PartFile(f"part-{index:05d}.parquet", parquet_bytes(chunk), chunk.num_rows))
    return publish_files(
        store,
        ref,
        parts,
        run_id=run_id,
        code_version=code_version,
        schema=schema_of(table.schema),
        upstream=upstream,
        extra=extra,
    )


# Spark names its output files part-<task>-<job uuid>-c<n>[.<codec>].<ext>; published files are
# numbered in that order instead (the same rows give the same names).
_SPARK_PART = re.compile(r"^part-(\d+)-[0-9a-f-]{36}(?:_\d+)?[-.]c\d+(?:\.[a-z0-9]+)*?(\.[a-z]+(?:\.gz)?)$")
FOOTER_PROBE_BYTES = 64 * 1024


def is_data_file(relative: str) -> bool:
    """A file of a job's output, not a folder marker, a Spark side file or an uncommitted attempt's.

    ``relative``: the key after the output folder's prefix; ``""`` is the folder's own marker object
    (S3A writes one for a folder it creates, and may delete it again once files are under it).
    """
    return (
        bool(relative)
        and not relative.endswith("/")
        and not SPARK_SIDE_FILES.search(relative)
        and "_temporary/" not in relative
    )


def parquet_footer(store: ObjectStore, key: str, size: int) -> "pq.FileMetaData":
    """A Parquet object's footer (row count, schema) from one or two ranged reads of its end."""
    import pyarrow.parquet as pq

    tail = store.get_range(key, -min(size, FOOTER_PROBE_BYTES))
    if len(tail) < 12 or tail[-4:] != b"PAR1":
        raise StorageError(f"{store.uri(key)} is not a Parquet file (no PAR1 footer)")
    length = int.from_bytes(tail[-8:-4], "little")
    if length + 8 > len(tail):
        tail = store.get_range(key, size - length - 8)
    return pq.read_metadata(io.BytesIO(b"PAR1" + tail[-(length + 8) :]))


def staged_names(relatives: Sequence[str]) -> dict[str, str]:
    """Published name of each staged file: Spark's part files numbered per folder, others as they are."""
    names: dict[str, str] = {}
    parts: dict[tuple[str, str], list[tuple[int, str]]] = {}
    for relative in relatives:
        folder, _, name = relative.rpartition("/")
        match = _SPARK_PART.match(name)
        if match is None:
            names[relative] = relative
        else:
            parts.setdefault((folder, match.group(2)), []).append((int(match.group(1)), relative))
    for (folder, suffix), found in parts.items():
        for index, (_, relative) in enumerate(sorted(found)):
            names[relative] = f"{folder}/part-{index:05d}{suffix}" if folder else f"part-{index:05d}{suffix}"
    if len(set(names.values())) != len(names):
        raise StorageError(f"staged files map to clashing names: {sorted(names)}")
    return names


def publish_staged(
    store: ObjectStore,
    ref: PartitionRef,
    prefix: str,
    *,
    run_id: str,
    code_version: str,
    upstream: Iterable[Mapping[str, Any]] = (),
    extra: Mapping[str, Any] | None = None,
    rows: Mapping[str, int] | None = None,
    if_changed: bool = False,
) -> Manifest:
    """Publish what a Spark job wrote under the key ``prefix`` as the partition ``ref``.

    The bytes never pass through this process: files are listed with their ETags, Parquet row
    counts and schema come from ranged reads of the footers, and each file is copied server-side
    into the version folder, named by a digest of (name, ETag, size) of every file. Spark's side
    files and folder markers are skipped; Spark's part files are renamed ``part-00000...`` in
    their order. Other files take their row count from ``rows`` (by published name) if given.
    """
    staged = [o for o in store.list_objects(prefix) if is_data_file(o.key[len(prefix) :])]
    if not staged:
        raise StorageError(f"nothing to publish from {store.uri(prefix)} for {ref.prefix}")
    names = staged_names([o.key[len(prefix) :] for o in staged])
    entries: list[tuple[str, FileEntry]] = []
    schema: dict[str, Any] = {}
    digest = hashlib.sha256()
    described = sorted(((names[o.key[len(prefix) :]], o) for o in staged), key=lambda item: item[0])
    for name, info in described:
        digest.update(f"{name}\0{info.etag}\0{info.size}\n".encode())
    version = f"v-{digest.hexdigest()[:16]}"
    if if_changed and (current := read_manifest(store, ref)) is not None and current.version == version:
        log.info("%s already holds %s; kept", store.uri(ref.prefix), version)
        store.delete_keys([o.key for o in store.list_objects(prefix)])
        return current
    for name, info in described:
        count = (rows or {}).get(name)
        if name.endswith(".parquet"):
            metadata = parquet_footer(store, info.key, info.size)
            count = metadata.num_rows
            file_schema = schema_of(metadata.schema.to_arrow_schema())
            if schema and file_schema != schema:
                raise StorageError(f"{name} has another schema than the other files of {ref.prefix}")
            schema = file_schema
        relative = f"{version}/{name}"
        entries.append((info.key, FileEntry(path=relative, bytes=info.size, rows=count, etag=info.etag)))
    with ThreadPoolExecutor(max_workers=16) as pool:
        list(pool.map(lambda item: store.copy(item[0], ref.prefix + item[1].path), entries))
    manifest = _write_manifest(
        store, ref, version, [e for _, e in entries], run_id, code_version, schema, upstream, extra
    )
    store.delete_keys([o.key for o in store.list_objects(prefix)])
    return manifest


def _write_manifest(
    store: ObjectStore,
    ref: PartitionRef,
    version: str,
    entries: Sequence[FileEntry],
    run_id: str,
    code_version: str,
    schema: Mapping[str, Any] | None,
    upstream: Iterable[Mapping[str, Any]],
    extra: Mapping[str, Any] | None,
) -> Manifest:
    """Write the manifest (the commit point) and remove every other version of the partition."""
    row_counts = [e.rows for e in entries]
    manifest = Manifest(
        layer=ref.layer,
        table=ref.table,
        logical_date=ref.date.isoformat(),
        version=version,
        files=tuple(entries),
        row_count=sum(r for r in row_counts if r is not None) if any(r is not None for r in row_counts) else None,
        schema=dict(schema or {}),
        upstream=tuple(sorted((dict(u) for u in upstream), key=lambda u: str(u.get("uri")))),
        code_version=code_version,
        run_id=run_id,
        extra=dict(extra or {}),
    )
    # The commit point: a single PUT replaces the manifest atomically.
    store.put_bytes(ref.manifest_key, manifest.to_json(), content_type="application/json")
    _collect_garbage(store, ref)
    log.info("published %s (%s, %s rows, %d files)", store.uri(ref.prefix), version, manifest.row_count, len(entries))
    return manifest


def _collect_garbage(store: ObjectStore, ref: PartitionRef) -> None:
    """Delete files of this partition that the current manifest does not reference."""
    manifest = read_manifest(store, ref)
    if manifest is None:
        return
    keep = {ref.prefix + f.path for f in manifest.files} | {ref.manifest_key}
    stale = [key for key in store.list_keys(ref.prefix) if key not in keep]
    if stale:
        store.delete_keys(stale)
        log.info("removed %d stale objects under %s", len(stale), store.uri(ref.prefix))


def read_manifest(store: ObjectStore, ref: PartitionRef) -> Manifest | None:
    """The partition's manifest, or None when the partition is not (completely) published."""
    try:
        return Manifest.from_json(store.get_bytes(ref.manifest_key))
    except ObjectNotFound:
        return None


def require_manifest(store: ObjectStore, ref: PartitionRef) -> Manifest:
    """The partition's manifest; raises :class:`PartitionNotFound` with the URI when absent."""
    manifest = read_manifest(store, ref)
    if manifest is None:
        raise PartitionNotFound(
            f"{store.uri(ref.prefix)} is not published (no {MANIFEST_NAME}); run the task that writes it first"
        )
    return manifest


def read_table(store: ObjectStore, ref: PartitionRef, columns: Sequence[str] | None = None) -> "pa.Table":
    """Read a published Parquet partition into one Arrow table."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    manifest = require_manifest(store, ref)
    tables = [
        pq.read_table(io.BytesIO(store.get_bytes(ref.prefix + f.path)), columns=columns)
        for f in manifest.files
        if f.path.endswith(".parquet")
    ]
    if not tables:
        raise PartitionNotFound(f"{store.uri(ref.prefix)} holds no Parquet files")
    return pa.concat_tables(tables)


def read_file(store: ObjectStore, ref: PartitionRef, name: str) -> bytes:
    """Read one published file by its name as given at publish time."""
    manifest = require_manifest(store, ref)
    for entry in manifest.files:
        if entry.path == f"{manifest.version}/{name}":
            return store.get_bytes(ref.prefix + entry.path)
    raise PartitionNotFound(f"{store.uri(ref.prefix)} has no file {name!r}")


def list_partitions(store: ObjectStore, layer: str, table: str = "") -> list[dt.date]:
    """Dates of the manifest-complete partitions of a table, oldest first."""
    base = PartitionRef(layer, table, dt.date(2000, 1, 1)).prefix.rsplit("dt=", 1)[0]
    # One listing, not a request per day: the delimiter rolls every partition's version folders
    # (``dt=D/v-<digest>/...``) up into one prefix each, so the keys listed are the manifests.
    manifest = re.compile(re.escape(base) + r"dt=(\d{4}-\d{2}-\d{2})/" + re.escape(MANIFEST_NAME))
    dates = []
    for key in store.list_keys(base, delimiter="/v-"):
        match = manifest.fullmatch(key)
        if match:
            dates.append(dt.date.fromisoformat(match.group(1)))
    return sorted(dates)


def list_tables(store: ObjectStore, layer: str) -> list[str]:
    """Names of the tables under a layer that hold at least one folder."""
    return sorted(p[len(layer) + 1 : -1] for p in store.list_prefixes(f"{layer}/") if "dt=" not in p)
