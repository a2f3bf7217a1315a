"""Blocking rules against the real lake: trailing days come from earlier manifests."""

from __future__ import annotations

import datetime as dt

import pytest

from include.preference import tasks
from include.preference.errors import ValidationBlocked
from include.preference.storage import PartitionRef, read_file, read_manifest

pytestmark = pytest.mark.integration

NORMAL = {"seed": 4, "customers": 300, "products": 50, "sessions_per_day": 200}


def test_a_day_far_below_the_trailing_volume_is_blocked_with_its_report(lake_env):
    store = lake_env
    start = dt.date(2025, 4, 1)
    for offset in range(3):
        day = start + dt.timedelta(days=offset)
        tasks.land_raw_data(day, run_id="test", generator=NORMAL)
        tasks.validate_raw_data(day, run_id="test")
    thin_day = start + dt.timedelta(days=3)
    tasks.land_raw_data(thin_day, run_id="test", generator={**NORMAL, "sessions_per_day": 8})

    with pytest.raises(ValidationBlocked) as blocked:
        tasks.validate_raw_data(thin_day, run_id="test")
    message = str(blocked.value)
    assert "events: volume_anomaly" in message
    assert f"s3://{store.bucket}/reports/validation/dt={thin_day}/" in message and "index.html" in message
    assert read_manifest(store, PartitionRef("validated", "events", thin_day)) is None
    report = read_manifest(store, PartitionRef("reports", "validation", thin_day))
    assert report.extra["blocked"] is True
    summary = read_file(store, PartitionRef("reports", "validation", thin_day), "summary.json").decode()
    assert "volume_anomaly" in summary
