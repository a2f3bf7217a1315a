"""The demo's Online Retail part: its summary lines and its MLflow run (a real MLflow server)."""

from __future__ import annotations

from pathlib import Path

import pytest

from include.preference.demo import EVALUATION_EXPERIMENT, EvaluationResult, format_evaluation, log_evaluation


def _report() -> dict:
    metrics = {"recall_at_k": 0.25, "precision_at_k": 0.05, "ndcg_at_k": 0.2, "hit_rate_at_k": 0.5}
    return {
        "protocol": {
            "source": "online_retail",
            "input": "sample.csv.gz",
            "cutoff": "2011-09-10",
            "horizon_days": 90,
            "k": 10,
            "window": ["2011-09-11", "2011-12-09"],
        },
        "n_eval_customers": 428,
        "model": {**metrics, "recall_at_k": 0.3125, "auc": 0.8},
        "baselines": {"popularity": {**metrics, "recall_at_k": 0.0625}, "buy_again": metrics, "als": metrics},
        "training": {"anchors": ["2011-06-12", "2011-05-13"]},
        "pooled": {
            "cutoffs": ["2011-08-11", "2011-09-10"],
            "units": 800,
            "metrics": {"model": {**metrics, "recall_at_k": 0.3}, "buy_again": metrics},
            "model_over_baseline_recall": {"buy_again": {"ratio": 1.2, "low": 1.05, "high": 1.36}},
        },
    }


@pytest.mark.unit
def test_the_summary_names_the_protocol_and_ranks_model_and_baselines():
    result = EvaluationResult(Path("sample.csv.gz"), Path("report.json"), _report(), "http://mlflow/run", 61.0)
    lines = format_evaluation(result)
    assert "428 customers evaluated" in lines[0] and "2011-09-11 to 2011-12-09" in lines[0]
    rows = {line.split()[0]: line.split()[1:] for line in lines[2:6]}
    assert rows["model"][0] == "0.312" and rows["popularity"][0] == "0.062" and rows["buy_again"][0] == "0.250"
    assert lines[-1].endswith("http://mlflow/run")
    assert any("pooled over cutoffs 2011-08-11, 2011-09-10 (800 customer-cutoffs)" in line for line in lines)
    assert any(line.split() == ["buy_again", "1.20x", "(1.05-1.36)"] for line in lines)
    assert format_evaluation(None, "no file") == ["Online Retail evaluation: skipped (no file)"]


@pytest.mark.integration
def test_an_evaluation_is_logged_as_one_mlflow_run_with_its_report(mlflow_service, tmp_path):
    import json

    from mlflow.tracking import MlflowClient

    runtime = mlflow_service
    report_path = tmp_path / "report.json"
    report_path.write_text(json.dumps(_report()))
    url = log_evaluation(runtime.mlflow_uri, _report(), report_path)
    client = MlflowClient(runtime.mlflow_uri)
    experiment = client.get_experiment_by_name(EVALUATION_EXPERIMENT)
    run_id = url.rsplit("/", 1)[1]
    assert url.startswith(f"{runtime.mlflow_uri}/#/experiments/{experiment.experiment_id}/runs/")
    run = client.get_run(run_id)
    assert run.data.metrics["model_recall_at_k"] == 0.3125 and run.data.metrics["buy_again_recall_at_k"] == 0.25
    assert run.data.metrics["n_eval_customers"] == 428
    assert run.data.metrics["pooled_model_over_buy_again_low"] == 1.05
    assert run.data.metrics["pooled_model_recall_at_k"] == 0.3
    assert run.data.params["cutoff"] == "2011-09-10" and run.data.params["k"] == "10"
    assert [a.path for a in client.list_artifacts(run_id)] == ["report.json"]
