"""What a bucket of the lake holds, file by file, to compare two runs partition by partition.

Parquet files compare by content: the rows and the schema, read back and hashed. Spark's Parquet
writer (parquet-mr) lists each column chunk's encodings in a hash-set order that changes from one
JVM to the next, so the same rows written by two task processes can differ in a few footer bytes.
Every other file (TFRecords, HTML, JSON, PNG) compares by the digest its manifest records: SHA-256,
or the S3 ETag (MD5 of the content) of a file a Spark executor wrote straight to S3.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import io

import pyarrow as pa
import pyarrow.parquet as pq

from include.preference.storage import ObjectStore, list_partitions, list_tables, read_manifest
from include.preference.storage.partitions import PartitionRef

# Layers whose content a day's run determines (reports carry timestamps; models are trained anew).
COMPARED_LAYERS = ("raw", "validated", "quarantine", "features", "training", "segments", "scores")


def parquet_content_digest(data: bytes) -> str:
    """SHA-256 of a Parquet file's rows and schema (Arrow IPC, without key-value metadata)."""
    table = pq.read_table(io.BytesIO(data))
    table = table.replace_schema_metadata(None)
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table)
    return hashlib.sha256(sink.getvalue().to_pybytes()).hexdigest()


def snapshot(store: ObjectStore, days: set[dt.date] | None = None) -> dict[tuple[str, str, str], tuple]:
    """(layer, table, day) -> (row count, each file's name and digest) of every compared partition."""
    found = {}
    for layer in COMPARED_LAYERS:
        for table in [*list_tables(store, layer), ""]:  # "": partitions right under the layer (training)
            for day in list_partitions(store, layer, table):
                if days is not None and day not in days:
                    continue
                ref = PartitionRef(layer, table, day)
                manifest = read_manifest(store, ref)
                if manifest is None:
                    continue
                files = []
                for entry in sorted(manifest.files, key=lambda f: f.path):
                    name = entry.path.split("/", 1)[-1] if entry.path.startswith("v-") else entry.path
                    if entry.path.endswith(".parquet"):
                        digest = parquet_content_digest(store.get_bytes(ref.prefix + entry.path))
                    else:
                        digest = entry.sha256 or entry.etag
                    files.append((name, digest))
                found[(layer, table, day.isoformat())] = (manifest.row_count, tuple(files))
    return found
