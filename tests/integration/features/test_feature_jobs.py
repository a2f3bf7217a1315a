"""The feature and training-data jobs against the real S3 server: modes, manifests, self-healing."""

from __future__ import annotations

import pytest

from include.preference.config import load_settings
from include.preference.features.build import build_features
from include.preference.features.jobs import plan_mode, run_feature_build, run_training_build
from include.preference.features.spec import spec_fingerprint
from include.preference.storage import PartitionRef, publish_table, read_manifest, read_table
from tests.support.lake import clone

pytestmark = [pytest.mark.integration, pytest.mark.slow]

TABLES = ("events", "orders", "products", "customers", "reviews")


def publish_validated(store, lake, day):
    for table in TABLES:
        data = lake.read_arrow(PartitionRef("validated", table, day))
        publish_table(store, PartitionRef("validated", table, day), data, run_id="test", code_version="test")


@pytest.fixture
def settings(lake_env, tmp_path, monkeypatch):
    monkeypatch.setenv("PREFERENCE_LOCAL_DIR", str(tmp_path / "local"))
    monkeypatch.setenv("PREFERENCE_HORIZON_DAYS", "1")
    return load_settings()


def test_jobs_fold_days_incrementally_and_recompute_when_a_past_day_changes(
    validated_history, settings, lake_env, spark
):
    store = lake_env
    source, days = validated_history
    for day in days[:4]:
        publish_validated(store, source, day)

    results = [run_feature_build(store, settings, day, run_id=f"run-{day}") for day in days[:3]]
    assert [r["mode"] for r in results] == ["full", "incremental", "incremental"]
    state = read_manifest(store, PartitionRef("features", "state_customers", days[2]))
    assert sorted(state.extra["folded"]) == [d.isoformat() for d in days[:3]]
    assert state.extra["spec"] == spec_fingerprint() and state.run_id == f"run-{days[2]}"

    # The same features as the Spark job on a work area of its own (every validated day: the
    # full build folds only those up to its day).
    reference = clone(source, "reference")
    build_features(spark, reference, days[2], mode="full")
    published = read_table(store, PartitionRef("features", "customers", days[2])).to_pandas()
    expected = reference.read_arrow(PartitionRef("features", "customers", days[2])).to_pandas()
    assert (
        published.sort_values("customer_id")
        .reset_index(drop=True)
        .equals(expected.sort_values("customer_id").reset_index(drop=True))
    )

    # A past day is rewritten upstream: the next build notices and recomputes from all history.
    before = read_manifest(store, PartitionRef("features", "daily_customers", days[1])).version
    events = read_table(store, PartitionRef("validated", "events", days[1]))
    publish_table(
        store,
        PartitionRef("validated", "events", days[1]),
        events.slice(0, events.num_rows // 2),
        run_id="fix",
        code_version="test",
    )
    mode, reason = plan_mode(store, days[3])
    assert mode == "full" and str(days[1]) in reason
    rebuilt = run_feature_build(store, settings, days[3], run_id="run-after-fix")
    assert rebuilt["mode"] == "full" and rebuilt["rows"]["past_dailies"] == 4 * 3
    after = read_manifest(store, PartitionRef("features", "daily_customers", days[1]))
    assert after.version != before and after.extra["mode"] == "full"
    assert plan_mode(store, days[4]) == ("incremental", f"state of {days[3]} is intact")


def test_training_job_waits_for_its_horizon_then_publishes_parquet_tfrecords_and_schema(
    validated_history, settings, lake_env
):
    store = lake_env
    source, days = validated_history
    publish_validated(store, source, days[0])
    run_feature_build(store, settings, days[0], run_id="r0")
    skipped = run_training_build(store, settings, days[1], run_id="r1")
    assert "validated/orders/dt=" in skipped["skipped"]  # the horizon day is not in yet

    publish_validated(store, source, days[1])
    result = run_training_build(store, settings, days[1], run_id="r1")
    assert result["anchor"] == days[0].isoformat()
    manifest = read_manifest(store, PartitionRef("training", "", days[0]))
    files = {f.path.split("/", 1)[1]: f for f in manifest.files}
    assert "schema.json" in files
    parquet_rows = sum(f.rows for name, f in files.items() if name.endswith(".parquet"))
    tfrecord_rows = sum(f.rows for name, f in files.items() if name.endswith(".tfrecord.gz"))
    assert parquet_rows == tfrecord_rows == result["examples"] == manifest.extra["examples"] > 0
    assert manifest.extra["label_days"] == [days[1].isoformat()]
    assert manifest.extra["spec"] == spec_fingerprint()
    assert len(manifest.upstream) == 5  # four feature tables of the anchor, one label day
