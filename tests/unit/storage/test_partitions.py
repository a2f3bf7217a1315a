"""Pure parts of the partition contract: naming, manifests, deterministic serialisation."""

from __future__ import annotations

import datetime as dt

import pyarrow as pa
import pytest

from include.preference.storage.partitions import (
    SPARK_SIDE_FILES,
    FileEntry,
    Manifest,
    PartFile,
    PartitionRef,
    _version_digest,
    is_data_file,
    parquet_bytes,
)

pytestmark = pytest.mark.unit


def test_partition_prefix_follows_the_storage_contract():
    assert PartitionRef("raw", "events", dt.date(2025, 3, 1)).prefix == "raw/events/dt=2025-03-01/"
    assert PartitionRef("training", "", dt.date(2025, 3, 1)).manifest_key == "training/dt=2025-03-01/_MANIFEST.json"


@pytest.mark.parametrize(
    "layer, table, date, error",
    [
        ("bronze", "events", dt.date(2025, 1, 1), ValueError),
        ("raw", "Events", dt.date(2025, 1, 1), ValueError),
        ("raw", "../x", dt.date(2025, 1, 1), ValueError),
        ("raw", "events", dt.datetime(2025, 1, 1), TypeError),
    ],
)
def test_invalid_partitions_are_refused(layer, table, date, error):
    with pytest.raises(error):
        PartitionRef(layer, table, date)


def test_manifest_json_round_trips_and_is_canonical():
    manifest = Manifest(
        layer="raw",
        table="events",
        logical_date="2025-03-01",
        version="v-1",
        files=(FileEntry("v-1/part-00000.parquet", 10, "ab" * 32, 3),),
        row_count=3,
        schema={"columns": []},
        upstream=({"uri": "s3://lake/x", "sha256": "0"},),
        code_version="c",
        run_id="r",
        extra={"b": 1, "a": 2},
    )
    again = Manifest.from_json(manifest.to_json())
    assert again == manifest
    assert again.to_json() == manifest.to_json()
    assert manifest.to_json().index(b'"code_version"') < manifest.to_json().index(b'"files"')


def test_parquet_serialisation_is_byte_identical_for_equal_tables():
    table = pa.table({"a": [1, 2, 3], "b": ["x", "y", None]})
    assert parquet_bytes(table) == parquet_bytes(pa.table({"a": [1, 2, 3], "b": ["x", "y", None]}))
    assert parquet_bytes(table) != parquet_bytes(pa.table({"a": [1, 2, 4], "b": ["x", "y", None]}))


def test_version_digest_depends_on_names_and_content_not_order():
    one = [PartFile("a", b"1"), PartFile("b", b"2")]
    assert _version_digest(one) == _version_digest(list(reversed(one)))
    assert _version_digest(one) != _version_digest([PartFile("a", b"1"), PartFile("b", b"3")])
    assert _version_digest(one) != _version_digest([PartFile("a", b"1"), PartFile("c", b"2")])


@pytest.mark.parametrize(
    "name, skipped",
    [
        ("_SUCCESS", True),
        (".part-0000.parquet.crc", True),
        ("sub/_SUCCESS", True),
        ("part-00000-1234.snappy.parquet", False),
        ("index.html", False),
        ("static/styles.css", False),
    ],
)
def test_spark_side_files_are_recognised(name, skipped):
    assert bool(SPARK_SIDE_FILES.search(name)) is skipped


@pytest.mark.parametrize(
    "relative, data",
    [
        ("", False),  # the output folder's own marker object
        ("dt=2025-03-01/", False),
        ("dt=2025-03-01/_SUCCESS", False),
        ("_temporary/0/task/part-00000.parquet", False),
        ("dt=2025-03-01/part-00000-1234.c000.snappy.parquet", True),
        ("examples.tfrecord", True),
    ],
)
def test_only_a_jobs_data_files_are_published(relative, data):
    assert is_data_file(relative) is data
