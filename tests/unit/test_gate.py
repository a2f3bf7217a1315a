"""The registry gate's rule."""

from __future__ import annotations

import pytest

from include.preference.registry import decide

pytestmark = pytest.mark.unit

BASELINES = {"popularity": 0.10, "buy_again": 0.30, "als": 0.20}


def test_promotes_only_above_the_champion_and_the_best_baseline():
    assert decide(0.35, None, BASELINES, backfill=False).promote
    assert decide(0.35, 0.32, BASELINES, backfill=False, champion_version="3").promote
    worse = decide(0.31, 0.32, BASELINES, backfill=False, champion_version="3")
    assert not worse.promote and "champion v3" in worse.reason
    below = decide(0.29, None, BASELINES, backfill=False)
    assert not below.promote and below.best_baseline == "buy_again" and "buy_again" in below.reason
    assert not decide(0.30, None, BASELINES, backfill=False).promote  # a tie is not a win


def test_a_backfill_never_promotes():
    decision = decide(0.99, 0.1, BASELINES, backfill=True, champion_version="1")
    assert not decision.promote and "backfill" in decision.reason


def test_an_error_gate_promotes_only_below_the_champion_and_the_best_baseline():
    errors = {"mean_profile": 0.9, "other": 0.5}
    gate = {"metric": "reconstruction_error", "lower_is_better": True, "backfill": False}
    first = decide(0.3, None, errors, **gate)
    assert first.promote and first.best_baseline == "other"  # the lowest error is the bar
    assert not decide(0.6, None, errors, **gate).promote
    worse = decide(0.35, 0.3, errors, champion_version="2", **gate)
    assert not worse.promote and "reconstruction_error 0.3500 does not beat champion v2" in worse.reason
    assert decide(0.25, 0.3, errors, champion_version="2", **gate).promote
    assert not decide(0.3, 0.3, errors, champion_version="2", **gate).promote  # a tie is not a win
