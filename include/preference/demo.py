"""``make demo``: start the embedded services, run the pipeline's DAGs through Airflow, summarise.

The DAG chain runs for a few consecutive past days through Airflow's REST API (a backfill, then
the latest day as a regular run), so the scheduler and the LocalExecutor run every task exactly as
in daily operation.
"""

from __future__ import annotations

import datetime as dt
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from include.preference.airflow_client import AirflowClient
from include.preference.config import PROJECT_ROOT, S3Settings
from include.preference.services import ADMIN_USER, Runtime, ServiceManager
from include.preference.storage import LAYERS, ObjectStore, list_partitions, list_tables, read_manifest
from include.preference.storage.partitions import PartitionRef

log = logging.getLogger(__name__)

# The DAGs of the chain, in order; each runs for the same logical dates.
DEMO_DAGS = ("marketplace_ingest_daily",)
DEMO_DAYS = 6
# A short label horizon, so that a week of days yields training anchors, a holdout, a trained and
# promoted model, then scores and segments (with the default 7 days that takes three weeks).
DEMO_HORIZON_DAYS = 2
# A world small enough for a 2-core machine (the deployment defaults are 2000 / 400 / 1500), set
# as the services' PREFERENCE_SYNTH_* settings so that scheduled and backfill runs share it.
DEMO_WORLD = {"customers": 600, "products": 120, "sessions_per_day": 500}
# The demo's second part: the evaluate protocol on an Online Retail invoice file, when present.
DEFAULT_ONLINE_RETAIL = PROJECT_ROOT.parent / "shared" / "data" / "online_retail_dev.csv.gz"
EVALUATION_HORIZON_DAYS = 90
EVALUATION_K = 10
EVALUATION_EXPERIMENT = "customer-preference-evaluation"
# How long to wait for the run that unpausing schedules for the latest complete day.
SCHEDULED_RUN_WAIT_SECONDS = 60.0


def demo_environment() -> dict[str, str]:
    """The settings the demo's services start with (an explicit environment variable wins)."""
    values = {"PREFERENCE_HORIZON_DAYS": str(DEMO_HORIZON_DAYS)}
    values.update({f"PREFERENCE_SYNTH_{name.upper()}": str(value) for name, value in DEMO_WORLD.items()})
    return values


def last_complete_day(now: dt.datetime | None = None) -> dt.date:
    """Yesterday in UTC: the newest day whose data interval has ended."""
    now = now or dt.datetime.now(dt.UTC)
    return now.astimezone(dt.UTC).date() - dt.timedelta(days=1)


@dataclass(frozen=True)
class DemoResult:
    runs: dict[str, list[dict[str, Any]]]
    partitions: list[tuple[str, str, str, str]]
    seconds: float
    example_customer: str | None = None
    evaluation: "EvaluationResult | None" = None
    evaluation_note: str = ""

    @property
    def ok(self) -> bool:
        return all(r["state"] == "success" for runs in self.runs.values() for r in runs)


def store_for(runtime: Runtime) -> ObjectStore:
    return ObjectStore(
        S3Settings(
            endpoint_url=runtime.s3_endpoint,
            access_key_id=runtime.access_key_id,
            secret_access_key=runtime.secret_access_key,
            bucket=runtime.bucket,
        )
    )


def published_partitions(store: ObjectStore) -> list[tuple[str, str, str, str]]:
    """(layer, table, date, size) of every manifest-complete partition: rows, or files when not tabular."""
    found = []
    for layer in LAYERS:
        for table in [*list_tables(store, layer), ""]:  # "": partitions right under the layer (training)
            for date in list_partitions(store, layer, table):
                manifest = read_manifest(store, PartitionRef(layer, table, date))
                if manifest is None:
                    continue
                size = (
                    f"rows={manifest.row_count}" if manifest.row_count is not None else f"files={len(manifest.files)}"
                )
                found.append((layer, table, date.isoformat(), size))
    return found


def run_demo(
    runtime: Runtime, days: int = DEMO_DAYS, end: dt.date | None = None, online_retail: Path | None = None
) -> DemoResult:
    """Start services and run ``days`` consecutive days ending at ``end`` through Airflow.

    Unpausing a DAG starts its daily schedule; a backfill (re)runs every day of the range with
    the current code (tasks are idempotent, so a rerun rewrites identical partitions), one day at a
    time so that each day finds the previous days' outputs (training anchors) as in daily
    operation; the last day runs as a regular run (scheduled, or triggered), so its model can pass
    the gate and become champion, and scores and segments are published. Waits for every run and
    lists what the lake holds. Then, given an Online Retail invoice file, runs the evaluate
    protocol on it (:func:`run_online_retail`).
    """
    end = end or last_complete_day()
    started = time.monotonic()
    ServiceManager(runtime).up()
    client = AirflowClient(runtime.airflow_url, ADMIN_USER, runtime.admin_password)
    start = end - dt.timedelta(days=days - 1)
    runs: dict[str, list[dict[str, Any]]] = {}
    for dag_id in DEMO_DAGS:
        client.wait_for_dag(dag_id)
        backfill = None
        if days > 1:
            # The earlier days as a backfill, one day at a time (a backfill never promotes a model).
            # Created before unpausing, so that its runs exist when the scheduler creates the run
            # for the latest day, whose feature build then waits for them (depends_on_past).
            backfill = client.create_backfill(
                dag_id, start, end - dt.timedelta(days=1), max_active_runs=1, reprocess="completed"
            )
        client.set_paused(dag_id, False)
        # The last day as a regular run: its model may become champion, then scoring and segments
        # follow. Unpausing schedules it when it is the latest complete day; otherwise trigger it.
        if not _wait_for_run(client, dag_id, end, SCHEDULED_RUN_WAIT_SECONDS if end == last_complete_day() else 0):
            client.trigger_day(dag_id, end)
        runs[dag_id] = client.wait_for_runs(dag_id, start, end, expected=days)  # logs progress
        if backfill is not None:  # closed by the scheduler once its runs have finished
            client.wait_for_backfill(int(backfill["id"]))
    store = store_for(runtime)
    partitions, customer = published_partitions(store), example_customer(store)
    evaluation, note = None, "no Online Retail file (set PREFERENCE_DEMO_ONLINE_RETAIL)"
    if online_retail is not None:
        log.info("Online Retail: the evaluate protocol on %s", online_retail)
        evaluation, note = run_online_retail(runtime, online_retail), ""
    return DemoResult(runs, partitions, time.monotonic() - started, customer, evaluation, note)


def _wait_for_run(client: AirflowClient, dag_id: str, day: dt.date, seconds: float) -> bool:
    """Whether a run for ``day`` exists, waiting up to ``seconds`` for the scheduler to create it."""
    deadline = time.monotonic() + seconds
    while True:
        if client.dag_runs(dag_id, day, day):
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(3.0)


def online_retail_sample(env: dict[str, str] | None = None) -> Path | None:
    """The invoice file of the demo's second part (``PREFERENCE_DEMO_ONLINE_RETAIL``), if present."""
    import os

    env = dict(os.environ) if env is None else env
    configured = env.get("PREFERENCE_DEMO_ONLINE_RETAIL")
    path = Path(configured) if configured else DEFAULT_ONLINE_RETAIL
    return path if path.is_file() else None


@dataclass(frozen=True)
class EvaluationResult:
    """The Online Retail part of the demo: the evaluate protocol's report, logged to MLflow."""

    input: Path
    report_path: Path
    report: dict[str, Any]
    mlflow_run_url: str
    seconds: float


def run_online_retail(runtime: Runtime, path: Path) -> EvaluationResult:
    """The evaluate protocol on an invoice file (import, validation, features, training, scoring,
    baselines; the DAG's code), its holdout the file's last ``EVALUATION_HORIZON_DAYS``; the report
    is written under the runtime's home and logged to MLflow (experiment ``EVALUATION_EXPERIMENT``)."""
    import os
    import shutil

    from include.preference.evaluation.protocol import Protocol, evaluate, file_days, write_report

    started = time.monotonic()
    os.environ.update(runtime.client_env())  # MLflow's artifact store is the lake
    cutoff = file_days("online_retail", path)[-1] - dt.timedelta(days=EVALUATION_HORIZON_DAYS)
    protocol = Protocol("online_retail", str(path), cutoff, EVALUATION_HORIZON_DAYS, EVALUATION_K)
    out = runtime.home / "demo" / "online_retail"
    shutil.rmtree(out / "work", ignore_errors=True)
    report = evaluate(protocol, store_for(runtime), out / "work")
    shutil.rmtree(out / "work", ignore_errors=True)
    report_path = out / "report.json"
    write_report(report, report_path)
    url = log_evaluation(runtime.mlflow_uri, report, report_path)
    return EvaluationResult(path, report_path, report, url, time.monotonic() - started)


def log_evaluation(tracking_uri: str, report: dict[str, Any], report_path: Path) -> str:
    """One MLflow run for an evaluation report: protocol as params, metrics of model and baselines.

    Through a client of its own: no tracking URI or active experiment is left set in the process.
    """
    from mlflow.entities import Metric, Param
    from mlflow.tracking import MlflowClient

    from include.preference.registry import experiment_id_for

    client = MlflowClient(tracking_uri)
    protocol = report["protocol"]
    experiment_id = experiment_id_for(client, EVALUATION_EXPERIMENT)
    run = client.create_run(experiment_id, run_name=f"{protocol['source']} cutoff {protocol['cutoff']}")
    run_id = run.info.run_id
    values = {f"model_{k}": float(v) for k, v in report["model"].items()}
    for baseline, metrics in report["baselines"].items():
        values.update({f"{baseline}_{k}": float(v) for k, v in metrics.items()})
    values["n_eval_customers"] = float(report["n_eval_customers"])
    pooled = report.get("pooled") or {}
    for name, metrics in pooled.get("metrics", {}).items():
        values[f"pooled_{name}_recall_at_k"] = float(metrics["recall_at_k"])
    for baseline, interval in pooled.get("model_over_baseline_recall", {}).items():
        values.update({f"pooled_model_over_{baseline}_{k}": float(interval[k]) for k in ("ratio", "low", "high")})
    now = int(time.time() * 1000)
    client.log_batch(
        run_id,
        metrics=[Metric(k, v, now, 0) for k, v in values.items()],
        params=[Param(k, str(v)) for k, v in protocol.items() if not isinstance(v, (list, dict))],
    )
    client.log_artifact(run_id, str(report_path))
    client.set_terminated(run_id)
    return f"{tracking_uri}/#/experiments/{experiment_id}/runs/{run_id}"


def example_customer(store: ObjectStore) -> str | None:
    """A customer with recommendations in the latest scored day (for the summary's link), if any."""
    from include.preference.storage import read_table

    days = list_partitions(store, "scores", "recommendations")
    if not days:
        return None
    ids = read_table(store, PartitionRef("scores", "recommendations", days[-1]), columns=["customer_id"])
    return str(ids.column("customer_id")[0].as_py()) if ids.num_rows else None


def format_evaluation(evaluation: EvaluationResult | None, note: str = "") -> list[str]:
    """The Online Retail part of the summary: who was evaluated, recall@K of model and baselines."""
    if evaluation is None:
        return [f"Online Retail evaluation: skipped ({note})"]
    report = evaluation.report
    protocol, k = report["protocol"], report["protocol"]["k"]
    window = " to ".join(protocol["window"])
    lines = [
        f"Online Retail evaluation ({evaluation.seconds:.0f}s): {evaluation.input.name}, trained on anchors "
        f"{', '.join(report['training']['anchors'])}, {report['n_eval_customers']} customers evaluated on "
        f"their purchases {window}",
        f"  {'':18s} {'recall@' + str(k):>10s} {'ndcg@' + str(k):>9s} {'hit@' + str(k):>8s}",
    ]
    for name, metrics in {"model": report["model"], **report["baselines"]}.items():
        lines.append(
            f"  {name:18s} {metrics['recall_at_k']:10.3f} {metrics['ndcg_at_k']:9.3f} {metrics['hit_rate_at_k']:8.3f}"
        )
    pooled = report.get("pooled")
    if pooled:
        lines.append(
            f"  pooled over cutoffs {', '.join(pooled['cutoffs'])} ({pooled['units']} customer-cutoffs): "
            f"model recall@{k} over each baseline's, paired bootstrap 95% interval"
        )
        for name, interval in pooled["model_over_baseline_recall"].items():
            lines.append(f"    {name:18s} {interval['ratio']:5.2f}x ({interval['low']:.2f}-{interval['high']:.2f})")
    lines += [f"  report: {evaluation.report_path}", f"  MLflow: {evaluation.mlflow_run_url}"]
    return lines


def format_summary(runtime: Runtime, result: DemoResult) -> str:
    """What ran, what the lake holds, and where to look."""
    lines = ["", "=== Customer Preference Pipeline: demo summary ===", ""]
    lines.append(f"Airflow runs ({result.seconds:.0f}s in all):")
    for dag_id, runs in result.runs.items():
        for run in runs:
            duration = ""
            if run.get("start_date") and run.get("end_date"):
                seconds = dt.datetime.fromisoformat(run["end_date"]) - dt.datetime.fromisoformat(run["start_date"])
                duration = f"{seconds.total_seconds():.0f}s"
            lines.append(
                f"  {dag_id:32s} {run['logical_date'][:10]}  {run['state']:8s} {duration:>5s}  {run['dag_run_id']}"
            )
    lines.append("")
    lines.append(f"Published partitions in s3://{runtime.bucket}/ (with _MANIFEST.json):")
    for layer, table, date, size in result.partitions:
        lines.append(f"  {layer}/{table + '/' if table else ''}dt={date}  {size}")
    lines += ["", *format_evaluation(result.evaluation, result.evaluation_note)]
    lines += [
        "",
        f"Airflow UI : {runtime.airflow_url}   login: {ADMIN_USER} / {runtime.admin_password}",
        f"Dashboard  : {runtime.airflow_url}/plugin/customer-preference   (Customer preference, in Airflow's menu)",
        f"Customers  : {runtime.airflow_url}/preference/ui/customers/{result.example_customer or '<customer_id>'}   "
        f"API: {runtime.airflow_url}/preference/docs",
        f"MLflow UI  : {runtime.mlflow_uri}",
        f"S3 (lake)  : {runtime.s3_endpoint}  bucket {runtime.bucket}, keys in {runtime.home}/generated.env or .env",
        "Stop everything with `make down`; `make status` shows what runs.",
        "",
        "RESULT: " + ("all runs succeeded" if result.ok else "some runs FAILED (see the Airflow UI, task logs)"),
    ]
    return "\n".join(lines)
