"""A corpus of corrupted inputs: each names its exact outcome, and no valid row is ever lost.

Every case starts from a clean synthetic day (as text, the way a file lands), breaks it in one way,
and checks the rule that fires, whether the day is blocked or the rows quarantined, the counts,
and that the untouched rows are all still validated. Each case runs twice: the day validated alone
(``validate_day``, the daily DAG) and the day validated between two clean days in one run
(``validate_days``, history files): the broken day's share must read the same.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from pathlib import Path

import pandas as pd
import pytest

from include.preference.sources.synthetic import SyntheticConfig, generate_day_frames
from include.preference.validation import TrailingStats, validate_day, validate_days

pytestmark = [pytest.mark.unit, pytest.mark.slow]

DAY = dt.date(2025, 5, 14)
CONFIG = SyntheticConfig(seed=5, customers=200, products=40, sessions_per_day=90)


def as_text(frame: pd.DataFrame) -> pd.DataFrame:
    """The frame as a CSV import lands it: every value text, empty cells as nulls."""
    out = pd.DataFrame(index=frame.index)
    for column in frame.columns:
        values = frame[column]
        if isinstance(values.dtype, pd.DatetimeTZDtype):
            text = values.dt.strftime("%Y-%m-%dT%H:%M:%S.%f%z")
        else:
            text = values.astype("string")
        out[column] = text.where(values.notna(), None)
    return out


@pytest.fixture(scope="module")
def clean() -> dict[str, pd.DataFrame]:
    return {name: as_text(frame) for name, frame in generate_day_frames(CONFIG, DAY).items()}


@pytest.fixture(scope="module")
def neighbours() -> dict[dt.date, dict[str, pd.DataFrame]]:
    days = (DAY - dt.timedelta(days=1), DAY + dt.timedelta(days=1))
    return {d: {name: as_text(frame) for name, frame in generate_day_frames(CONFIG, d).items()} for d in days}


@pytest.fixture(params=["alone", "between_clean_days"])
def run(request, neighbours) -> Callable[..., object]:
    def alone(tables: dict[str, pd.DataFrame], tmp_path: Path, **kwargs):
        return validate_day(DAY, tables, tmp_path / "docs", **kwargs)

    def between_clean_days(tables: dict[str, pd.DataFrame], tmp_path: Path, closed_day: bool = False):
        result = validate_days({**neighbours, DAY: tables}, closed_days=frozenset({DAY} if closed_day else ()))
        for day in neighbours:  # the clean days stay clean whatever happened to their neighbour
            assert result.day(day).tables["events"].quarantine.empty
        return result.day(DAY)

    return alone if request.param == "alone" else between_clean_days


@pytest.fixture(scope="module")
def baseline(clean, tmp_path_factory):
    result = validate_day(DAY, clean, tmp_path_factory.mktemp("baseline"))
    assert not result.blocking
    assert result.tables["events"].quarantine.empty
    return {name: len(outcome.validated) for name, outcome in result.tables.items()}


def corrupt(clean, table: str, change: Callable[[pd.DataFrame], pd.DataFrame]) -> dict[str, pd.DataFrame]:
    tables = {name: frame.copy() for name, frame in clean.items()}
    tables[table] = change(tables[table].copy())
    return tables


def set_rows(column: str, value, rows=(0, 1, 2), where: Callable[[pd.DataFrame], pd.Series] | None = None):
    def change(frame: pd.DataFrame) -> pd.DataFrame:
        index = frame.index[where(frame)] if where is not None else frame.index
        frame.loc[index[list(rows)], column] = value
        return frame

    return change


def purchases(frame: pd.DataFrame) -> pd.Series:
    return frame["event_type"] == "purchase"


# (case id, table, change, rule, rows quarantined for that rule)
QUARANTINE_CASES = [
    ("null_required_field", "events", set_rows("customer_id", None, rows=(0, 1, 2, 3)), "missing_required", 4),
    ("blank_required_field", "events", set_rows("session_id", "   ", rows=(5,)), "missing_required", 1),
    (
        "negative_price",
        "events",
        set_rows("price", "-3.50", where=lambda f: f["price"].notna()),
        "non_positive_price",
        3,
    ),
    (
        "zero_price",
        "events",
        set_rows("price", "0", rows=(0, 1), where=lambda f: f["price"].notna()),
        "non_positive_price",
        2,
    ),
    ("zero_quantity", "events", set_rows("quantity", "0", rows=(0, 1), where=purchases), "non_positive_quantity", 2),
    ("unknown_event_type", "events", set_rows("event_type", "click", rows=range(5)), "unknown_event_type", 5),
    ("orphan_product", "events", set_rows("product_id", "P999999", rows=(0, 1), where=purchases), "orphan_product", 2),
    ("orphan_customer", "events", set_rows("customer_id", "C9999999", rows=(3,)), "orphan_customer", 1),
    ("timestamp_day_before", "events", set_rows("event_time", "2025-05-13T23:59:00+00:00"), "outside_logical_day", 3),
    (
        "timestamp_day_after",
        "events",
        set_rows("event_time", "2025-05-15T00:00:00+00:00", rows=(0,)),
        "outside_logical_day",
        1,
    ),
    ("unparseable_date", "events", set_rows("event_time", "32/13/2025 25:61", rows=(0, 1)), "unparseable_timestamp", 2),
    (
        "mixed_time_zones_crossing_midnight",
        "events",
        set_rows("event_time", "2025-05-14T01:30:00+02:00", rows=(0,)),
        "outside_logical_day",
        1,
    ),
    (
        "huge_quantity",
        "events",
        set_rows("quantity", "1000000000000", rows=(0,), where=purchases),
        "unparseable_number",
        1,
    ),
    (
        "infinite_price",
        "events",
        set_rows("price", "inf", rows=(0,), where=lambda f: f["price"].notna()),
        "unparseable_number",
        1,
    ),
    ("text_in_number", "events", set_rows("quantity", "two", rows=(0,), where=purchases), "unparseable_number", 1),
    # Absurd values: above the hard bounds (no trailing days here).
    ("absurd_quantity", "orders", set_rows("quantity", "5000000", rows=(0, 1)), "implausible_value", 2),
    ("absurd_price", "events", set_rows("price", "1e12", rows=(0,), where=purchases), "implausible_value", 1),
    ("bad_encoding", "events", set_rows("session_id", "S\ufffd\ufffd-1", rows=(0, 1)), "bad_encoding", 2),
    ("control_characters", "events", set_rows("customer_id", "C00\x0001", rows=(0,)), "bad_encoding", 1),
    ("bell_and_escape", "events", set_rows("session_id", "S\x07\x1b[31m-1", rows=(0, 2)), "bad_encoding", 2),
    ("future_time", "events", set_rows("event_time", "2099-05-14T10:00:00Z", rows=(0, 1)), "future_timestamp", 2),
    ("markup_in_id", "events", set_rows("session_id", "<script>x</script>", rows=(0, 1)), "invalid_id", 2),
    ("quote_in_id", "orders", set_rows("order_id", 'O"1', rows=(0,)), "invalid_id", 1),
    ("overlong_id", "events", set_rows("session_id", "S" * 500, rows=(2,)), "field_too_long", 1),
    ("overlong_text", "events", set_rows("query", "q" * 100_000, rows=(0,)), "field_too_long", 1),
    ("null_sentinel_id", "events", set_rows("session_id", "NULL", rows=(0, 1, 2)), "missing_required", 3),
    (
        "view_without_product",
        "events",
        set_rows("product_id", None, rows=(0,), where=lambda f: f["event_type"] == "view"),
        "missing_product",
        1,
    ),
    (
        "postage_code_in_orders",
        "orders",
        set_rows("product_id", "POST", rows=(0,), where=lambda f: f["is_cancellation"] == "False"),
        "non_product_code",
        1,
    ),
    ("unparseable_flag", "orders", set_rows("is_cancellation", "maybe", rows=(0,)), "unparseable_boolean", 1),
    ("unparseable_date_column", "customers", set_rows("first_seen", "yesterday", rows=(0,)), "unparseable_date", 1),
]


@pytest.mark.parametrize("case, table, change, rule, count", QUARANTINE_CASES, ids=[c[0] for c in QUARANTINE_CASES])
def test_row_level_corruption_is_quarantined_under_its_rule(
    run, clean, baseline, tmp_path, case, table, change, rule, count
):
    result = run(corrupt(clean, table, change), tmp_path)
    assert result.blocking == []
    outcome = result.tables[table]
    assert outcome.by_rule_all.get(rule) == count, outcome.by_rule_all
    assert outcome.by_rule.get(rule) == count
    assert len(outcome.quarantine) == count + (len(clean[table]) - baseline[table] if table == "orders" else 0)
    assert len(outcome.validated) + len(outcome.quarantine) == len(clean[table])  # nothing lost
    assert len(outcome.validated) == baseline[table] - count  # every untouched valid row kept
    assert (outcome.quarantine.loc[outcome.quarantine["rule"] == rule, "rules"].str.contains(rule)).all()


def test_padded_ids_are_trimmed_not_refused(run, clean, baseline, tmp_path):
    events = clean["events"].copy()
    events["customer_id"] = "  " + events["customer_id"] + " "
    events["event_id"] = events["event_id"] + "   "
    result = run({**clean, "events": events}, tmp_path / "padded")
    assert result.blocking == []
    outcome = result.tables["events"]
    assert len(outcome.validated) == baseline["events"] and outcome.quarantine.empty
    untouched = run(clean, tmp_path / "clean").tables["events"].validated
    for column in ("customer_id", "event_id"):
        assert outcome.validated[column].tolist() == untouched[column].tolist()


def test_rating_out_of_range_is_quarantined(run, clean, baseline, tmp_path):
    review = clean["orders"].iloc[[0]].rename(columns={"order_time": "review_time"})
    review = review.assign(review_id="R-1", rating="7", text="great")[list(clean["reviews"].columns)]
    outcome = run({**clean, "reviews": review}, tmp_path).tables["reviews"]
    assert outcome.by_rule == {"rating_out_of_range": 1} and outcome.validated.empty


def test_mixed_time_zones_that_stay_inside_the_day_are_valid(run, clean, baseline, tmp_path):
    tables = corrupt(clean, "events", set_rows("event_time", "2025-05-14T14:30:00+02:00", rows=(0, 1)))
    outcome = run(tables, tmp_path).tables["events"]
    assert outcome.quarantine.empty and len(outcome.validated) == baseline["events"]
    assert (outcome.validated["event_time"] == pd.Timestamp("2025-05-14T12:30:00Z")).sum() >= 2


def test_extra_columns_are_reported_and_dropped(run, clean, baseline, tmp_path):
    tables = corrupt(clean, "events", lambda f: f.assign(referrer="ads"))
    outcome = run(tables, tmp_path).tables["events"]
    assert outcome.extra_columns == ["referrer"] and "referrer" not in outcome.validated
    assert len(outcome.validated) == baseline["events"]


def test_column_order_does_not_matter(run, clean, baseline, tmp_path):
    tables = corrupt(clean, "events", lambda f: f[list(reversed(f.columns))])
    outcome = run(tables, tmp_path).tables["events"]
    assert outcome.quarantine.empty and len(outcome.validated) == baseline["events"]


BLOCKING_CASES = [
    ("missing_column", "events", lambda f: f.drop(columns=["event_type"]), "missing_columns", 1),
    ("renamed_column", "events", lambda f: f.rename(columns={"event_time": "timestamp"}), "missing_columns", 1),
    ("wrong_type_column", "events", lambda f: f.assign(price="cheap"), "wrong_type", None),
    ("duplicate_keys", "events", lambda f: pd.concat([f, f.iloc[:3]], ignore_index=True), "duplicate_keys", 6),
    ("duplicated_file", "orders", lambda f: pd.concat([f, f], ignore_index=True), "duplicate_keys", None),
    ("day_with_zero_rows", "events", lambda f: f.iloc[0:0], "empty_day", 0),
    ("stale_data", "events", lambda f: f.assign(event_time="2025-05-10T10:00:00+00:00"), "stale_data", None),
]


@pytest.mark.parametrize("case, table, change, rule, count", BLOCKING_CASES, ids=[c[0] for c in BLOCKING_CASES])
def test_table_level_corruption_blocks_the_day_with_its_rule(run, clean, tmp_path, case, table, change, rule, count):
    result = run(corrupt(clean, table, change), tmp_path)
    failures = [b for b in result.blocking if b.table == table]
    assert [b.rule for b in failures][:1] == [rule], result.summary()["blocking"]
    if count is not None:
        assert failures[0].count == count
    assert rule in failures[0].describe() and table in failures[0].describe()


def test_volume_far_below_the_trailing_days_blocks(clean, tmp_path):
    trailing = {"events": TrailingStats(row_counts=(50_000, 52_000, 51_000), last_seconds=(80_000.0,) * 3)}
    result = validate_day(DAY, clean, tmp_path / "docs", trailing=trailing)
    assert [b.rule for b in result.blocking if b.table == "events"] == ["volume_anomaly"]


def test_a_day_that_stops_early_is_truncated(clean, tmp_path):
    events = clean["events"]
    early = events[events["event_time"] < "2025-05-14T12"].copy()
    n = len(events)
    trailing = {"events": TrailingStats(row_counts=(n, n, n), last_seconds=(84_000.0, 83_000.0, 85_000.0))}
    result = validate_day(DAY, {**clean, "events": early}, tmp_path / "docs", trailing=trailing)
    assert [b.rule for b in result.blocking if b.table == "events"] == ["truncated_day"]


def test_plausible_bounds_follow_the_trailing_days_and_never_pass_the_hard_bound(clean, tmp_path):
    from include.preference.validation import Plausibility

    orders = clean["orders"].copy()
    quantities = pd.to_numeric(orders["quantity"])
    # Trailing days whose 99.9th percentile of quantity was at most 10: 20 x 10 = 200 is the bound.
    orders.loc[orders.index[:2], "quantity"] = ["201", "200"]
    trailing = {"orders": TrailingStats((len(orders),) * 3, (), {"quantity": (8.0, 10.0, 9.0)})}
    result = validate_day(DAY, {**clean, "orders": orders}, tmp_path / "docs", trailing=trailing)
    outcome = result.tables["orders"]
    assert outcome.by_rule.get("implausible_value") == 1 and result.blocking == []
    implausible = outcome.quarantine[outcome.quarantine["rule"] == "implausible_value"]
    assert implausible["quantity"].tolist() == ["201"]
    # Published for the next days' bounds: the validated values' 99.9th percentile.
    validated = pd.to_numeric(outcome.validated["quantity"])
    assert outcome.p999["quantity"] == pytest.approx(float(validated.quantile(0.999)))
    # Fewer than three trailing days with values: the hard bound alone (here set to 150).
    short = {"orders": TrailingStats((len(orders),) * 3, (), {"quantity": (10.0, 10.0)})}
    bounds = Plausibility(max_quantity=150)
    hard = validate_day(DAY, {**clean, "orders": orders}, tmp_path / "docs2", trailing=short, plausibility=bounds)
    assert hard.tables["orders"].by_rule.get("implausible_value") == 2
    assert int(quantities.max()) <= 150  # the generator's own quantities all stay valid


def test_a_closed_day_may_be_empty(run, clean, tmp_path):
    result = run(
        {**clean, "events": clean["events"].iloc[0:0], "orders": clean["orders"].iloc[0:0]}, tmp_path, closed_day=True
    )
    assert result.blocking == []


def test_data_docs_from_the_compiled_template_cache_equal_freshly_compiled_ones(clean, tmp_path):
    from include.preference.validation.engine import compiled_templates

    cache = compiled_templates().cache
    cache.compiled.clear()
    validate_day(DAY, clean, tmp_path / "fresh")
    compilations = cache.compilations
    assert cache.compiled, "no template went through the shared cache"
    validate_day(DAY, clean, tmp_path / "cached")
    assert cache.compilations == compilations  # every template came from the cache
    fresh, cached = (
        {p.relative_to(d): p.read_bytes() for p in d.rglob("*") if p.is_file()}
        for d in (
            tmp_path / "fresh",
            tmp_path / "cached",
        )
    )
    assert any(p.suffix == ".html" for p in fresh)
    assert cached == fresh
