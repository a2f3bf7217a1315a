"""The storage contract against a real SeaweedFS S3 server."""

from __future__ import annotations

import datetime as dt
import json
import subprocess
import sys
import textwrap
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor

import pyarrow as pa
import pytest

from include.preference.config import S3Settings
from include.preference.storage import (
    ObjectStore,
    PartFile,
    PartitionNotFound,
    PartitionRef,
    StorageAuthError,
    list_partitions,
    publish_files,
    publish_table,
    read_file,
    read_manifest,
    read_table,
    upstream_entry,
)

pytestmark = pytest.mark.integration

DAY = dt.date(2025, 3, 1)


def table_of(n: int, offset: int = 0) -> pa.Table:
    return pa.table({"id": pa.array(range(offset, offset + n), pa.int64()), "name": [f"row-{i}" for i in range(n)]})


def test_published_table_reads_back_with_a_complete_manifest(store):
    ref = PartitionRef("raw", "events", DAY)
    table = table_of(2500)
    manifest = publish_table(
        store,
        ref,
        table,
        run_id="run-1",
        code_version="abc",
        rows_per_file=1000,
        upstream=[{"uri": "s3://x/y", "sha256": "0"}],
        extra={"source": "test"},
    )
    assert read_table(store, ref).equals(table)
    assert manifest.row_count == 2500 and [f.rows for f in manifest.files] == [1000, 1000, 500]
    assert [c["name"] for c in manifest.schema["columns"]] == ["id", "name"]
    assert (manifest.run_id, manifest.code_version, manifest.extra) == ("run-1", "abc", {"source": "test"})
    assert read_manifest(store, ref) == manifest
    assert list_partitions(store, "raw", "events") == [DAY]
    import hashlib

    for entry in manifest.files:
        assert hashlib.sha256(store.get_bytes(ref.prefix + entry.path)).hexdigest() == entry.sha256


KILLER = textwrap.dedent("""
    import datetime as dt, json, os, signal, sys
    import pyarrow as pa
    from include.preference.config import S3Settings
    from include.preference.storage import ObjectStore, PartitionRef, publish_table

    class DiesBeforeManifest(ObjectStore):
        def put_bytes(self, key, body, content_type="application/octet-stream"):
            if key.endswith("_MANIFEST.json"):
                os.kill(os.getpid(), signal.SIGKILL)
            super().put_bytes(key, body, content_type)

    settings = S3Settings(**json.loads(sys.argv[1]))
    table = pa.table({"id": pa.array(range(int(sys.argv[2])), pa.int64())})
    publish_table(DiesBeforeManifest(settings), PartitionRef("raw", "events", dt.date(2025, 3, 1)), table,
                  run_id="doomed", code_version="x", rows_per_file=100)
""")


def publish_and_get_killed(store: ObjectStore, rows: int) -> None:
    s = store.settings
    settings = {
        "endpoint_url": s.endpoint_url,
        "access_key_id": s.access_key_id,
        "secret_access_key": s.secret_access_key,
        "bucket": s.bucket,
    }
    result = subprocess.run(
        [sys.executable, "-c", KILLER, json.dumps(settings), str(rows)], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == -9, result.stderr  # really killed, right before the manifest


def test_a_publish_killed_before_its_manifest_leaves_nothing_visible(store):
    ref = PartitionRef("raw", "events", DAY)
    publish_and_get_killed(store, rows=350)
    assert any(store.list_keys(ref.prefix)), "the data files were uploaded before the kill"
    assert read_manifest(store, ref) is None
    assert list_partitions(store, "raw", "events") == []
    with pytest.raises(PartitionNotFound, match="not published"):
        read_table(store, ref)


def test_a_rerun_killed_before_its_manifest_leaves_the_previous_version_intact(store):
    ref = PartitionRef("raw", "events", DAY)
    before = publish_table(store, ref, table_of(120), run_id="good", code_version="x")
    publish_and_get_killed(store, rows=350)
    assert read_manifest(store, ref) == before
    assert read_table(store, ref).equals(table_of(120))
    # The next successful publish cleans up what the killed one left behind.
    publish_table(store, ref, table_of(120), run_id="good", code_version="x")
    assert sorted(store.list_keys(ref.prefix)) == sorted(
        [ref.manifest_key] + [ref.prefix + f.path for f in before.files]
    )


def test_rerunning_a_date_gives_identical_manifest_and_content(store):
    ref = PartitionRef("validated", "orders", DAY)
    first = publish_table(store, ref, table_of(777), run_id="scheduled__2025-03-02", code_version="c1")
    first_bytes = store.get_bytes(ref.manifest_key)
    keys = sorted(store.list_keys(ref.prefix))
    second = publish_table(store, ref, table_of(777), run_id="scheduled__2025-03-02", code_version="c1")
    assert store.get_bytes(ref.manifest_key) == first_bytes
    assert second == first
    assert sorted(store.list_keys(ref.prefix)) == keys


def test_new_content_replaces_the_old_version_and_removes_its_files(store):
    ref = PartitionRef("raw", "orders", DAY)
    old = publish_table(store, ref, table_of(10), run_id="r", code_version="c")
    new = publish_table(store, ref, table_of(12), run_id="r", code_version="c")
    assert new.version != old.version
    assert read_table(store, ref).num_rows == 12
    assert not any(key.startswith(ref.prefix + old.version) for key in store.list_keys(ref.prefix))


def test_two_dates_published_concurrently_do_not_interfere(store_factory, store):
    days = [DAY, DAY + dt.timedelta(days=1)]
    tables = {day: table_of(20_000 + i, offset=i * 1_000_000) for i, day in enumerate(days)}

    def publish_repeatedly(day: dt.date) -> None:
        own_store = store_factory(bucket=store.bucket)  # one client per thread
        for _ in range(3):
            publish_table(
                own_store,
                PartitionRef("features", "customers", day),
                tables[day],
                run_id=f"run-{day}",
                code_version="c",
                rows_per_file=5000,
            )

    with ThreadPoolExecutor(max_workers=2) as pool:
        list(pool.map(publish_repeatedly, days))
    assert list_partitions(store, "features", "customers") == days
    for day in days:
        ref = PartitionRef("features", "customers", day)
        assert read_table(store, ref).equals(tables[day])
        manifest = read_manifest(store, ref)
        assert manifest.run_id == f"run-{day}" and manifest.logical_date == day.isoformat()


def test_wrong_credentials_fail_with_a_clear_message(s3_service, store):
    wrong = ObjectStore(
        S3Settings(
            endpoint_url=s3_service.s3_endpoint,
            access_key_id=s3_service.access_key_id,
            secret_access_key="not-the-secret",
            bucket=store.bucket,
        )
    )
    with pytest.raises(StorageAuthError) as caught:
        wrong.check()
    message = str(caught.value)
    assert "refused the credentials" in message and "SignatureDoesNotMatch" in message
    assert store.bucket in message and "AWS_SECRET_ACCESS_KEY" in message
    assert "not-the-secret" not in message
    unknown = ObjectStore(
        S3Settings(
            endpoint_url=s3_service.s3_endpoint, access_key_id="nobody", secret_access_key="x", bucket=store.bucket
        )
    )
    with pytest.raises(StorageAuthError, match="InvalidAccessKeyId"):
        publish_table(unknown, PartitionRef("raw", "events", DAY), table_of(3), run_id="r", code_version="c")


@pytest.mark.parametrize("method", ["GET", "PUT"])
def test_anonymous_requests_are_refused(s3_service, store, method):
    request = urllib.request.Request(
        f"{s3_service.s3_endpoint}/{store.bucket}/raw/x.txt", method=method, data=b"x" if method == "PUT" else None
    )
    with pytest.raises(urllib.error.HTTPError) as caught:
        urllib.request.urlopen(request, timeout=10)
    assert caught.value.code == 403


def test_spark_reads_inputs_and_publishes_its_output_through_s3a_alone(store, spark):
    """Spark reads the files a manifest lists and writes a work area; the publish copies them
    server-side into the version folder, manifest last, and the work area is gone afterwards."""
    from include.preference.storage.spark_lake import spark_lake

    source = PartitionRef("validated", "events", DAY)
    publish_table(store, source, table_of(300), run_id="r", code_version="c", rows_per_file=100)
    target = PartitionRef("features", "customers", DAY)
    with spark_lake(store, "round-trip") as lake:
        lake.add(source, read_manifest(store, source))
        assert all(f.startswith(f"s3a://{store.bucket}/validated/events/dt=") for f in lake.files(source))
        frame = lake.need(spark, source, "test")
        assert frame.count() == 300
        rows = lake.write_table(frame.where("id < 42"), target, ["id"], files=2)
        assert rows == 42
        written = [o.key for o in lake.written(target)]
        assert len(written) == 2 and all(k.startswith(lake.work) for k in written)
        manifest = lake.publish(target, run_id="r", code_version="c", upstream=[upstream_entry(store, source)])
        work = lake.work
    assert manifest.row_count == 42 and len(manifest.files) == 2
    assert [f.path.split("/", 1)[1] for f in manifest.files] == ["part-00000.parquet", "part-00001.parquet"]
    assert all(f.etag and f.rows for f in manifest.files)
    assert sorted(read_table(store, target).column("id").to_pylist()) == list(range(42))
    assert list(store.list_keys(work)) == []

    # The same rows again: the same version, a byte-identical manifest but for the run.
    with spark_lake(store, "round-trip") as lake:
        lake.add(source, read_manifest(store, source))
        lake.write_table(lake.need(spark, source, "test").where("id < 42"), target, ["id"], files=2)
        again = lake.publish(target, run_id="r", code_version="c", upstream=[upstream_entry(store, source)])
    assert again.to_json() == manifest.to_json()


def test_a_spark_job_refuses_a_local_path(store, spark, tmp_path):
    from include.preference.storage.spark_lake import spark_lake

    with spark_lake(store, "local") as lake, pytest.raises(ValueError, match="S3 only"):
        lake.add_files(PartitionRef("validated", "events", DAY), [str(tmp_path / "part-00000.parquet")])


def test_named_files_keep_their_names_for_reports(store):
    ref = PartitionRef("reports", "validation", DAY)
    publish_files(
        store,
        ref,
        [PartFile("index.html", b"<a href='static/x.css'>"), PartFile("static/x.css", b"a{}")],
        run_id="r",
        code_version="c",
    )
    assert read_file(store, ref, "static/x.css") == b"a{}"
    with pytest.raises(PartitionNotFound):
        read_file(store, ref, "missing.html")
