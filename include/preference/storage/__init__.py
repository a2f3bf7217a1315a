"""The lake: S3 access and the date-partition contract (manifest last, readers follow manifests)."""

from include.preference.errors import ObjectNotFound, PartitionNotFound, StorageAuthError, StorageError
from include.preference.storage.partitions import (
    LAYERS,
    MANIFEST_NAME,
    FileEntry,
    Manifest,
    PartFile,
    PartitionRef,
    list_partitions,
    list_tables,
    publish_files,
    publish_table,
    read_file,
    read_manifest,
    read_table,
    require_manifest,
    upstream_entry,
)
from include.preference.storage.s3 import ObjectStore
from include.preference.storage.scratch import scratch_directory

__all__ = [
    "LAYERS",
    "MANIFEST_NAME",
    "FileEntry",
    "Manifest",
    "ObjectNotFound",
    "ObjectStore",
    "PartFile",
    "PartitionNotFound",
    "PartitionRef",
    "StorageAuthError",
    "StorageError",
    "list_partitions",
    "list_tables",
    "publish_files",
    "publish_table",
    "read_file",
    "read_manifest",
    "read_table",
    "require_manifest",
    "scratch_directory",
    "upstream_entry",
]
