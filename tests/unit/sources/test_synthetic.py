"""The synthetic marketplace: deterministic, self-consistent, and carrying the planted structure."""

from __future__ import annotations

import datetime as dt

import numpy as np
import pandas as pd
import pytest

from include.preference.schema import TABLES
from include.preference.sources.synthetic import (
    CATEGORIES,
    SyntheticConfig,
    build_world,
    generate_day,
    generate_day_frames,
    ground_truth,
)

pytestmark = pytest.mark.unit

CONFIG = SyntheticConfig(seed=11, customers=1500, products=300, sessions_per_day=1200)
START = dt.date(2025, 4, 7)  # a Monday
DAYS = [START + dt.timedelta(days=i) for i in range(21)]


@pytest.fixture(scope="module")
def history() -> dict[str, pd.DataFrame]:
    """Three weeks of every table, with the day attached."""
    frames: dict[str, list[pd.DataFrame]] = {name: [] for name in TABLES}
    for day in DAYS:
        for name, frame in generate_day_frames(CONFIG, day).items():
            frames[name].append(frame.assign(day=day))
    return {name: pd.concat(parts, ignore_index=True) for name, parts in frames.items()}


@pytest.fixture(scope="module")
def truth() -> dict[str, pd.DataFrame]:
    return ground_truth(CONFIG)


def test_same_config_and_date_give_identical_tables_whatever_was_generated_before():
    first = generate_day(CONFIG, DAYS[5])
    generate_day(CONFIG, DAYS[9])
    build_world.cache_clear()
    again = generate_day(CONFIG, DAYS[5])
    assert all(first[name].equals(again[name]) for name in TABLES)
    other_seed = generate_day(SyntheticConfig(seed=12, customers=1500, products=300, sessions_per_day=1200), DAYS[5])
    assert not first["events"].equals(other_seed["events"])


def test_tables_match_the_canonical_schema_and_keys_are_unique():
    tables = generate_day(CONFIG, DAYS[3])
    for name, spec in TABLES.items():
        assert tables[name].schema.remove_metadata() == spec.arrow_schema(), name
        keys = tables[name].select(list(spec.key)).to_pandas()
        assert not keys.duplicated().any(), f"duplicate keys in {name}"


def test_every_timestamp_lies_inside_the_logical_day(history):
    for name in ("events", "orders", "reviews"):
        column = TABLES[name].time_column
        frame = history[name]
        dates = frame[column].dt.tz_convert("UTC").dt.date
        assert (dates == frame["day"]).all(), name


def test_funnel_every_purchase_follows_a_view_and_a_cart_in_its_session(history):
    events = history["events"]
    firsts = events.groupby(["session_id", "product_id", "event_type"])["event_time"].min().unstack()
    purchased = firsts.dropna(subset=["purchase"])
    assert len(purchased) > 500
    assert (purchased["view"] <= purchased["add_to_cart"]).all()
    assert (purchased["add_to_cart"] <= purchased["purchase"]).all()
    orders = history["orders"]
    assert (orders["quantity"] > 0).sum() == (events["event_type"] == "purchase").sum()
    counts = events["event_type"].value_counts()
    assert counts["view"] > counts["add_to_cart"] > counts["purchase"] > 0
    assert counts["search"] > 0


def test_cancellations_mirror_an_earlier_line_with_negative_quantity(history):
    orders = history["orders"]
    cancelled = orders[orders["is_cancellation"]]
    assert len(cancelled) > 0 and (cancelled["quantity"] < 0).all()
    originals = orders.set_index(["order_id", "line_number"])
    for row in cancelled.itertuples():
        original = originals.loc[(row.order_id.removesuffix("-C"), row.line_number)]
        assert original["quantity"] == -row.quantity and original["order_time"] < row.order_time


def test_purchases_concentrate_on_each_group_s_favourite_categories(history, truth):
    lines = history["orders"].query("quantity > 0").merge(truth["customers"], on="customer_id")
    lines = lines.merge(truth["products"], on="product_id")
    preference = truth["group_preference"]
    bought_preference = [preference.at[g, c] for g, c in zip(lines["group"], lines["category_path"], strict=True)]
    assert np.mean(bought_preference) > 4 / len(CATEGORIES)


def test_a_customer_s_group_can_be_recovered_from_what_they_buy(history, truth):
    lines = history["orders"].query("quantity > 0").merge(truth["products"], on="product_id")
    counts = pd.crosstab(lines["customer_id"], lines["category_path"]).reindex(columns=list(CATEGORIES), fill_value=0)
    counts = counts[counts.sum(axis=1) >= 3]
    log_preference = np.log(truth["group_preference"].to_numpy())
    guessed = (counts.to_numpy() @ log_preference.T).argmax(axis=1)
    actual = truth["customers"].set_index("customer_id").loc[counts.index, "group"].to_numpy()
    assert len(counts) > 200
    assert (guessed == actual).mean() > 0.7  # chance is about 1 / groups = 0.2


def test_staples_are_bought_again_on_different_days(history, truth):
    lines = history["orders"].query("quantity > 0").merge(truth["customers"], on="customer_id")
    is_staple = [p in s for p, s in zip(lines["product_id"], lines["staples"], strict=True)]
    assert np.mean(is_staple) > 0.25
    repeat_days = lines.groupby(["customer_id", "product_id"])["day"].nunique()
    assert (repeat_days >= 2).sum() > 100


def test_price_sensitive_customers_cart_cheaper_products(history, truth):
    carts = history["events"].query("event_type == 'add_to_cart'").merge(truth["customers"], on="customer_id")
    views = history["events"].query("event_type == 'view'").merge(truth["customers"], on="customer_id")
    sensitive = truth["customers"]["price_sensitivity"].quantile(0.67)
    relaxed = truth["customers"]["price_sensitivity"].quantile(0.33)

    def cart_rate_on_expensive(frame_views, frame_carts, mask_views, mask_carts):
        expensive = frame_views["price"].quantile(0.8)
        return (mask_carts & (frame_carts["price"] > expensive)).sum() / (
            mask_views & (frame_views["price"] > expensive)
        ).sum()

    rate_sensitive = cart_rate_on_expensive(
        views, carts, views["price_sensitivity"] > sensitive, carts["price_sensitivity"] > sensitive
    )
    rate_relaxed = cart_rate_on_expensive(
        views, carts, views["price_sensitivity"] < relaxed, carts["price_sensitivity"] < relaxed
    )
    assert rate_sensitive < 0.85 * rate_relaxed


def test_review_ratings_and_words_follow_the_customer_s_affinity(history, truth):
    reviews = history["reviews"].merge(truth["customers"], on="customer_id").merge(truth["products"], on="product_id")
    preference = truth["group_preference"]
    liked = (
        np.array([preference.at[g, c] for g, c in zip(reviews["group"], reviews["category_path"], strict=True)]) > 0.1
    )
    assert liked.sum() > 50 and (~liked).sum() > 10
    assert reviews.loc[liked, "rating"].mean() - reviews.loc[~liked, "rating"].mean() > 1.0
    assert reviews.loc[reviews["rating"] >= 4, "text"].str.contains("favourite").all()
    assert reviews.loc[reviews["rating"] <= 2, "text"].str.contains("bad").all()


def test_new_customers_and_products_arrive_and_never_act_before_they_exist():
    config = SyntheticConfig(seed=3, customers=800, products=200, sessions_per_day=400, growth_days=200)
    early = generate_day_frames(config, config.epoch + dt.timedelta(days=5))
    late = generate_day_frames(config, config.epoch + dt.timedelta(days=150))
    assert len(late["customers"]) > len(early["customers"]) + 100
    assert len(late["products"]) > len(early["products"]) + 20
    known = set(early["customers"]["customer_id"])
    assert set(early["events"]["customer_id"]) <= known
    assert set(early["events"]["product_id"].dropna()) <= set(early["products"]["product_id"])
    before_epoch = generate_day(config, config.epoch - dt.timedelta(days=1))
    assert all(table.num_rows == 0 for table in before_epoch.values())


def test_weekends_are_busier_than_midweek(history):
    sessions = history["events"].groupby("day")["session_id"].nunique()
    weekday = pd.Series({d: d.weekday() for d in sessions.index})
    assert sessions[weekday >= 5].mean() > 1.1 * sessions[weekday.isin([1, 2])].mean()


def test_scale_knobs_scale_the_output():
    small = generate_day(SyntheticConfig(seed=5, sessions_per_day=300), DAYS[2])["events"].num_rows
    large = generate_day(SyntheticConfig(seed=5, sessions_per_day=1200), DAYS[2])["events"].num_rows
    assert 3.0 < large / small < 5.0
    assert generate_day(SyntheticConfig(seed=5, customers=50, products=30), DAYS[2])["customers"].num_rows <= 50


@pytest.mark.parametrize("kwargs", [{"customers": 0}, {"products": 5}, {"groups": 0}, {"sessions_per_day": 0}])
def test_impossible_scales_are_refused(kwargs):
    with pytest.raises(ValueError):
        SyntheticConfig(**kwargs)


def test_config_reads_the_environment_and_overrides_win():
    config = SyntheticConfig.from_env(
        {"PREFERENCE_SYNTH_CUSTOMERS": "123", "PREFERENCE_SYNTH_EPOCH": "2024-06-01"}, seed=99
    )
    assert (config.customers, config.epoch, config.seed) == (123, dt.date(2024, 6, 1), 99)
