"""The DAG's training job against real S3 and MLflow: train from published partitions, evaluate on
the holdout, register, gate; a backfill never promotes; a retried attempt reuses its work."""

from __future__ import annotations

import datetime as dt
import json

import pytest

from include.preference.evaluation.metrics import f1_threshold
from include.preference.features import spec
from include.preference.model import load_model, predict_frame
from include.preference.storage import PartitionRef, list_partitions, read_file, read_table
from include.preference.tasks import train_model
from include.preference.training.jobs import baseline_scores, holdout_scores
from tests.support.lake import publish_from

pytestmark = [pytest.mark.integration, pytest.mark.slow]


@pytest.fixture
def published_training(training_sets, lake_env, mlflow_service, monkeypatch, tmp_path):
    store = lake_env
    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_service.mlflow_uri)  # the bucket stays lake_env's
    monkeypatch.setenv("PREFERENCE_HORIZON_DAYS", "3")
    monkeypatch.setenv("PREFERENCE_TRAINING_EPOCHS", "3")
    monkeypatch.setenv("PREFERENCE_LOCAL_DIR", str(tmp_path / "local"))
    monkeypatch.setenv("PREFERENCE_MODEL_NAME", f"job-test-{tmp_path.name[-10:]}".replace("_", "-"))
    for built in training_sets["sets"].values():
        publish_from(training_sets["lake"], built["ref"], store, rows=built["counts"]["shards"])
    return store, training_sets["holdout"] + dt.timedelta(days=3)


def test_training_job_registers_gates_and_a_backfill_never_promotes(published_training):
    from mlflow.tracking import MlflowClient

    store, day = published_training
    backfill = train_model(day, run_id="backfill__1", backfill=True)
    assert "skipped" not in backfill, backfill
    assert backfill["version"] == "1" and backfill["champion_version"] is None
    assert not backfill["gate"]["promote"] and "backfill" in backfill["gate"]["reason"]
    assert backfill["holdout"]["auc"] > 0.7
    # Sliced by RFM tier and new vs returning: every slicing splits the same evaluated customers.
    for ranking in ("model", "popularity", "buy_again"):
        slicings = backfill["slices"][ranking]
        assert set(slicings) == {"value_tier", "new_vs_returning"}
        assert set(slicings["value_tier"]) <= {"low", "mid", "high", "none"}
        counts = {name: sum(s["customers"] for s in groups.values()) for name, groups in slicings.items()}
        assert counts["value_tier"] == counts["new_vs_returning"] > 0
    assert len(backfill["anchors"]) == 3 and backfill["holdout_anchor"] == (day - dt.timedelta(days=3)).isoformat()
    # The decision threshold: chosen on the newest training anchor's examples with this model's
    # scores, measured on the holdout; the holdout's labels play no part in choosing it.
    decision = backfill["threshold_metrics"]
    assert decision["validation_anchor"] == backfill["anchors"][-1] < backfill["holdout_anchor"]
    validation = read_table(store, PartitionRef("training", "", dt.date.fromisoformat(decision["validation_anchor"])))
    frame = validation.to_pandas()
    model = load_model(f"models:/{backfill['model']}/{backfill['version']}")
    chosen = f1_threshold(frame[spec.LABEL].to_numpy(), predict_frame(model, frame))
    assert decision["threshold"] == pytest.approx(chosen["threshold"], abs=1e-6)
    assert decision["validation_f1"] == pytest.approx(chosen["f1"], abs=1e-6)
    holdout = read_table(store, PartitionRef("training", "", dt.date.fromisoformat(backfill["holdout_anchor"])))
    confusion = ("true_positives", "false_positives", "false_negatives", "true_negatives")
    assert sum(decision[key] for key in confusion) == holdout.num_rows
    assert decision["true_positives"] + decision["false_negatives"] == sum(holdout[spec.LABEL].to_pylist())

    # A retry of the same run reuses the finished training (checkpoint) and the registered version.
    again = train_model(day, run_id="backfill__1", backfill=True)
    assert again["version"] == "1" and again["workers"][0]["resumed_from_epoch"] == 3

    scheduled = train_model(day, run_id="scheduled__1", backfill=False)
    assert scheduled["version"] == "2"
    # The gate judged what the registered model and the baselines score on the holdout, recomputed
    # here from the model loaded from MLflow and the holdout read from S3.
    frame = holdout.to_pandas()
    registered = load_model(f"models:/{scheduled['model']}/2")
    recall = holdout_scores(frame, predict_frame(registered, frame), scheduled["k"])["recall_at_k"]
    baselines = {b: v["recall_at_k"] for b, v in baseline_scores(frame, scheduled["k"]).items()}
    best = max(baselines, key=lambda b: baselines[b])
    assert scheduled["gate"]["challenger"] == pytest.approx(recall, abs=1e-9)
    assert (scheduled["gate"]["best_baseline"], scheduled["gate"]["baseline"]) == (best, pytest.approx(baselines[best]))
    assert scheduled["gate"]["champion"] is None  # the backfill's version never became champion
    assert scheduled["gate"]["promote"] == (recall > baselines[best])
    client = MlflowClient()
    name = scheduled["model"]
    assert client.get_model_version_by_alias(name, "challenger").version == "2"
    assert len(client.search_model_versions(f"name = '{name}'")) == 2
    report = json.loads(read_file(store, PartitionRef("reports", "training", day), "summary.json"))
    assert report["version"] == "2" and report["mlflow_run_id"] == scheduled["mlflow_run_id"]
    assert day in list_partitions(store, "reports", "training")


def test_profile_training_job_registers_its_own_model_and_gates_on_reconstruction_error(published_training):
    from mlflow.tracking import MlflowClient

    from include.preference.profiles import mean_profile_error
    from include.preference.tasks import train_profile_model
    from include.preference.training.profiles import customers_of

    store, day = published_training
    backfill = train_profile_model(day, run_id="backfill__1", backfill=True)
    assert "skipped" not in backfill, backfill
    assert backfill["model"].endswith("-profile") and backfill["version"] == "1"
    assert not backfill["gate"]["promote"] and "backfill" in backfill["gate"]["reason"]
    measured = backfill["holdout"]
    print(f"profile job on the holdout: {measured}")
    assert measured["reconstruction_error"] < measured["mean_profile_error"]
    # The registered model, loaded here, gives the same figure on the holdout's customers (one row each).
    holdout = customers_of(store, PartitionRef("training", "", dt.date.fromisoformat(backfill["holdout_anchor"])))
    reference = customers_of(store, PartitionRef("training", "", dt.date.fromisoformat(backfill["anchors"][-1])))
    assert measured["customers"] == len(holdout) == holdout["customer_id"].nunique()
    again = mean_profile_error(load_model(f"models:/{backfill['model']}/1"), holdout, reference)
    assert again["reconstruction_error"] == pytest.approx(measured["reconstruction_error"], rel=1e-5)

    retried = train_profile_model(day, run_id="backfill__1", backfill=True)
    assert retried["version"] == "1" and retried["workers"][0]["resumed_from_epoch"] == 3

    scheduled = train_profile_model(day, run_id="scheduled__1", backfill=False)
    assert scheduled["version"] == "2" and scheduled["gate"]["best_baseline"] == "mean_profile"
    assert scheduled["gate"]["promote"] == (
        scheduled["holdout"]["reconstruction_error"] < scheduled["holdout"]["mean_profile_error"]
    )
    assert scheduled["gate"]["promote"], scheduled["gate"]
    client = MlflowClient()
    assert client.get_model_version_by_alias(scheduled["model"], "champion").version == "2"
    # The preference model's registry is untouched by the profile's versions.
    assert not client.search_registered_models(f"name = '{scheduled['model'][: -len('-profile')]}'")
    report = json.loads(read_file(store, PartitionRef("reports", "profile_training", day), "summary.json"))
    assert report["version"] == "2" and report["gate"]["promote"]
