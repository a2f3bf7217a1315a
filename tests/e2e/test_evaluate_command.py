"""The evaluate command on the real Online Retail sample: the JSON contract, and the evaluated
customers and truth exactly as the protocol defines them (recomputed here from the raw CSV)."""

from __future__ import annotations

import datetime as dt
import json
import os
import subprocess
import sys

import pandas as pd
import pytest

from include.preference.schema import NON_PRODUCT_CODES
from tests.conftest import PROJECT_ROOT, SHARED_DATA

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

SAMPLE = SHARED_DATA / "online_retail_dev.csv.gz"
CUTOFF = dt.date(2011, 2, 15)
HORIZON = 14
EARLIER = CUTOFF - dt.timedelta(days=HORIZON)  # a second cutoff: its anchors overlap the main one's
METRICS = {"recall_at_k", "precision_at_k", "ndcg_at_k", "hit_rate_at_k"}


def expected_customers() -> set[str]:
    raw = pd.read_csv(SAMPLE, dtype=str, keep_default_na=False)
    raw["day"] = pd.to_datetime(raw["InvoiceDate"]).dt.date
    raw["customer"] = raw["CustomerID"].str.strip().str.replace(r"\.0+$", "", regex=True)
    clean = raw[
        ~raw["InvoiceNo"].str.upper().str.startswith("C")
        & (pd.to_numeric(raw["Quantity"]) > 0)
        & (pd.to_numeric(raw["UnitPrice"]) > 0)
        & ~raw["StockCode"].str.strip().str.upper().isin(NON_PRODUCT_CODES)
        & (raw["customer"] != "")
    ]
    before = set(clean[clean["day"] <= CUTOFF]["customer"])
    window = clean[(clean["day"] > CUTOFF) & (clean["day"] <= CUTOFF + dt.timedelta(days=HORIZON))]
    return before & set(window["customer"])


@pytest.mark.skipif(not SAMPLE.exists(), reason="the shared Online Retail sample is not present")
def test_evaluate_writes_the_report_contract_on_online_retail(s3_service, store, tmp_path):
    output = tmp_path / "report.json"
    command = [
        sys.executable, "-m", "include.preference", "evaluate",
        "--source", "online_retail", "--input", str(SAMPLE),
        "--cutoff", CUTOFF.isoformat(), "--cutoffs", f"{EARLIER.isoformat()},{CUTOFF.isoformat()}",
        "--horizon-days", str(HORIZON), "--k", "10",
        "--training-anchors", "2", "--anchor-step-days", "14", "--epochs", "3",
        "--output", str(output), "--work-dir", str(tmp_path / "work"),
    ]  # fmt: skip
    # Spark's tables live in a work area of the lake (here the test's bucket), removed afterwards.
    env = {**os.environ, **s3_service.client_env(), "PREFERENCE_BUCKET": store.bucket}
    done = subprocess.run(command, cwd=PROJECT_ROOT, env=env, capture_output=True, timeout=1500)
    assert done.returncode == 0, done.stderr.decode()[-4000:]
    report = json.loads(output.read_text())
    assert list(store.list_keys("_work/")) == []

    assert report["protocol"]["cutoff"] == CUTOFF.isoformat() and report["protocol"]["k"] == 10
    assert report["n_eval_customers"] == len(expected_customers()) > 20
    assert set(report["model"]) == METRICS | {"auc"}
    assert set(report["baselines"]) == {"popularity", "buy_again", "buy_again_decayed", "tifu_knn", "als"}
    # The tuned baselines chose their settings on the horizon before the cutoff, never after it.
    for name in ("buy_again_decayed", "tifu_knn"):
        tuned = report["baseline_settings"][name]
        assert tuned["split"] == (CUTOFF - dt.timedelta(days=HORIZON)).isoformat() and tuned["tried"] > 1
    for metrics in (report["model"], *report["baselines"].values()):
        assert set(metrics) >= METRICS and all(0.0 <= metrics[m] <= 1.0 for m in METRICS)
    assert report["model"]["auc"] > 0.5
    # Repeat buying is the strong signal of invoice data: buy-again beats one list for everyone.
    assert report["baselines"]["buy_again"]["recall_at_k"] > report["baselines"]["popularity"]["recall_at_k"]
    # Rolling origin: a fold per cutoff, the main one carrying the top-level keys, and the pool.
    folds = {fold["cutoff"]: fold for fold in report["folds"]}
    assert list(folds) == [EARLIER.isoformat(), CUTOFF.isoformat()] == report["pooled"]["cutoffs"]
    main = folds[CUTOFF.isoformat()]
    assert main["model"] == report["model"] and main["baselines"] == report["baselines"]
    assert report["pooled"]["units"] == sum(f["n_eval_customers"] for f in folds.values())
    for fold in (*folds.values(), report["pooled"]):
        for name, interval in fold["model_over_baseline_recall"].items():
            assert name in report["baselines"] and interval["low"] <= interval["ratio"] <= interval["high"]
        split = fold["repeat_and_new"]["buy_again"]
        assert split["customers_with_repeat"] > 0 and split["recall_repeat_at_k"] > split["recall_new_at_k"]
    pooled = report["pooled"]["metrics"]["model"]["recall_at_k"]
    recalls = sorted(f["model"]["recall_at_k"] for f in folds.values())
    assert recalls[0] <= pooled <= recalls[-1]
    tiers = report["slices"]["model"]["new_vs_returning"]
    assert sum(s["customers"] for s in tiers.values()) == report["n_eval_customers"]
    # RFM value tiers as of the cutoff: every evaluated customer ordered before it, so none lacks one.
    value = report["slices"]["model"]["value_tier"]
    assert set(value) <= {"low", "mid", "high"} and len(value) >= 2
    assert sum(s["customers"] for s in value.values()) == report["n_eval_customers"]
    # The propensity as a decision: a threshold from the newest training anchor (before the cutoff),
    # its confusion matrix over every scored candidate.
    decision = report["threshold_metrics"]
    assert max(report["training"]["anchors"]) == decision["validation_anchor"] < CUTOFF.isoformat()
    cells = ("true_positives", "false_positives", "false_negatives", "true_negatives")
    assert sum(decision[c] for c in cells) == report["candidates"]["scored_pairs"]
    assert 0.0 < decision["threshold"] < 1.0 and 0.0 <= decision["f1"] <= 1.0
    assert decision["accuracy"] == (decision["true_positives"] + decision["true_negatives"]) / sum(
        decision[c] for c in cells
    )
