"""TIFU-KNN and decayed buy-again as specified, and tuned without looking past the cutoff."""

from __future__ import annotations

import datetime as dt

import numpy as np
import pandas as pd
import pytest

from include.preference.evaluation import baselines
from include.preference.evaluation.baselines import DecayedSettings, TifuSettings

pytestmark = pytest.mark.unit

START = dt.date(2024, 1, 1)


def purchases(rows: list[tuple[str, str, int]]) -> pd.DataFrame:
    """(customer, product, day number) -> the purchases frame the baselines take."""
    return pd.DataFrame(
        {
            "customer_id": [c for c, _, _ in rows],
            "product_id": [p for _, p, _ in rows],
            "day": [START + dt.timedelta(days=d) for _, _, d in rows],
        }
    )


def test_tifu_vectors_decay_within_and_across_groups_as_the_paper_defines():
    # Four baskets of groups of two: weights r_b^(L-1-j)/L * r_g^(G-1-g)/G with r_b = r_g = 0.5.
    history = purchases([("c", "x", 0), ("c", "y", 1), ("c", "y", 2), ("c", "x", 3), ("c", "x", 3)])
    settings = TifuSettings(group_size=2, within_decay=0.5, group_decay=0.5)
    customers, products, matrix = baselines.tifu_vectors(history, START + dt.timedelta(days=3), settings)
    vector = dict(zip(products, matrix.toarray()[0], strict=True))
    assert list(customers) == ["c"]
    assert vector["x"] == pytest.approx(0.5 / 2 * 0.5 / 2 + 1 / 2 * 1 / 2)  # baskets 0 and 3 (once a day)
    assert vector["y"] == pytest.approx(1 / 2 * 0.5 / 2 + 0.5 / 2 * 1 / 2)  # baskets 1 and 2
    # Five baskets in groups of at most two: three groups of 2, 2 and 1 baskets, the newest alone.
    five = purchases([("c", f"p{d}", d) for d in range(5)])
    _, products, matrix = baselines.tifu_vectors(five, START + dt.timedelta(days=4), settings)
    weights = dict(zip(products, matrix.toarray()[0], strict=True))
    assert weights["p4"] == pytest.approx(1 / 3)
    assert weights["p3"] == pytest.approx(0.5 / 3 / 2) and weights["p2"] == pytest.approx(0.5 / 2 * 0.5 / 3)
    assert weights["p0"] == pytest.approx(0.5 / 2 * 0.25 / 3)


def test_tifu_knn_brings_in_what_the_nearest_customers_bought():
    # a and b share a taste; b also buys z. c buys something else entirely.
    rows = [("a", "x", 0), ("a", "y", 1), ("b", "x", 0), ("b", "y", 1), ("b", "z", 2), ("c", "w", 0), ("c", "w", 1)]
    history = purchases(rows)
    cutoff = START + dt.timedelta(days=2)
    blended = baselines.tifu_knn(history, ["a"], cutoff, 3, TifuSettings(neighbours=1, alpha=0.5))
    assert set(blended["product_id"]) == {"x", "y", "z"}  # z from the neighbour b, not w from c
    own_only = baselines.tifu_knn(history, ["a"], cutoff, 3, TifuSettings(neighbours=1, alpha=1.0))
    assert own_only["product_id"].tolist()[:2] == ["y", "x"]  # the newer basket first
    assert own_only["product_id"].tolist()[2] == "w"  # then the most popular product a has not bought
    # A customer unseen before the cutoff gets the popular list.
    unseen = baselines.tifu_knn(history, ["nobody"], cutoff, 2)
    assert unseen["product_id"].tolist() == baselines.popular_products(history, cutoff, 2)


def test_decayed_buy_again_weighs_recent_days_by_the_half_life():
    history = purchases([("c", "old", 0), ("c", "old", 1), ("c", "old", 2), ("c", "new", 100)])
    cutoff = START + dt.timedelta(days=100)
    short = baselines.buy_again_decayed(history, ["c"], cutoff, 2, DecayedSettings(half_life_days=7))
    long = baselines.buy_again_decayed(history, ["c"], cutoff, 2, DecayedSettings(half_life_days=10_000))
    assert short["product_id"].tolist() == ["new", "old"] and long["product_id"].tolist() == ["old", "new"]


def world(seed: int, days: int = 120, customers: int = 60) -> pd.DataFrame:
    """Customers who rebuy their own few products on a rhythm, plus noise."""
    rng = np.random.default_rng(seed)
    rows = []
    for c in range(customers):
        own = rng.choice(40, size=3, replace=False)
        for day in range(int(rng.integers(0, 5)), days, int(rng.integers(3, 9))):
            rows.append((f"c{c}", f"p{rng.choice(own)}", day))
            if rng.random() < 0.3:
                rows.append((f"c{c}", f"p{rng.integers(40)}", day))
    return purchases(rows)


@pytest.mark.parametrize("name", ["tifu_knn", "buy_again_decayed"])
def test_the_settings_are_chosen_on_the_horizon_before_the_cutoff_never_after_it(name):
    history = world(3)
    cutoff, horizon = START + dt.timedelta(days=90), 20
    tuned = baselines.tuned_on_earlier_split(name, history, cutoff, horizon, 5)
    assert tuned["split"] == (cutoff - dt.timedelta(days=horizon)).isoformat()
    assert tuned["customers"] > 10 and tuned["tried"] > 1 and 0 < tuned["recall_at_k"] <= 1
    # Whatever happens after the cutoff (the evaluated window) changes nothing.
    after = history[pd.to_datetime(history["day"]).dt.date <= cutoff]
    changed = pd.concat([after, world(99, days=30).assign(day=lambda f: f["day"] + dt.timedelta(days=91))])
    assert baselines.tuned_on_earlier_split(name, changed, cutoff, horizon, 5) == tuned
    # What happens inside the earlier split's window does.
    split = dt.date.fromisoformat(tuned["split"])
    shuffled = after.assign(
        product_id=np.where(pd.to_datetime(after["day"]).dt.date > split, "p0", after["product_id"])
    )
    assert baselines.tuned_on_earlier_split(name, shuffled, cutoff, horizon, 5)["recall_at_k"] != tuned["recall_at_k"]
