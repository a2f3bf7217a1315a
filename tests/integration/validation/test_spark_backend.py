"""The suites on Spark (local) split a day exactly as on pandas."""

from __future__ import annotations

import datetime as dt

import pytest

from include.preference.sources.synthetic import SyntheticConfig, generate_day_frames
from include.preference.validation import validate_day
from include.preference.validation.engine import choose_backend

pytestmark = [pytest.mark.integration, pytest.mark.slow]

DAY = dt.date(2025, 5, 14)


def test_spark_and_pandas_backends_agree_row_for_row(tmp_path):
    tables = generate_day_frames(SyntheticConfig(seed=8, customers=300, products=50, sessions_per_day=150), DAY)
    events = tables["events"].copy()
    events.loc[events.index[:3], "price"] = -1.0
    events.loc[events.index[3:5], "event_type"] = "click"
    tables["events"] = events
    on_pandas = validate_day(DAY, tables, tmp_path / "pandas", backend="pandas")
    on_spark = validate_day(DAY, tables, tmp_path / "spark", backend="spark")
    for name, outcome in on_pandas.tables.items():
        other = on_spark.tables[name]
        assert other.by_rule_all == outcome.by_rule_all, name
        assert sorted(other.quarantine["_row"]) == sorted(outcome.quarantine["_row"]), name
        assert len(other.validated) == len(outcome.validated), name
    assert on_spark.tables["events"].by_rule_all == {"non_positive_price": 3, "unknown_event_type": 2}


def test_backend_is_chosen_by_size():
    assert choose_backend(1_000_000) == "pandas"
    assert choose_backend(30_000_000) == "spark"
    assert choose_backend(10, threshold=5) == "spark"
