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
