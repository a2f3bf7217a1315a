"""The daily training job: train on the published training partitions, evaluate, register, gate.

For the run of day D with horizon H:

* holdout: the examples of anchor ``D - H`` (published by the same run's ``build_training_data``:
  features as of D - H, labels from D - H + 1 .. D);
* training: the latest ``PREFERENCE_TRAINING_ANCHORS`` published anchors whose label window ends
  by the holdout's anchor (anchor <= D - 2H), so no training label lies in the holdout's window;
* training runs in this process (``PREFERENCE_TRAINING_WORKERS=1``: MirroredStrategy over the
  visible GPUs, or the CPU) or as that many workers in a Spark barrier stage; checkpoints go to
  ``checkpoints/train/dt=D/<inputs digest>/`` so a retried task with the same inputs resumes;
* evaluation on the holdout: AUC, PR-AUC, log loss, and recall/precision/NDCG/hit at K over each
  customer's holdout candidates (their positives and sampled negatives), for the model, the current
  champion and the baselines that need no extra data (popularity, buy-again) on the same rows, also
  per RFM value tier and new vs returning customer (``evaluation.slices``);
* the propensity as a decision: the threshold that maximises F1 on the validation split, the
  examples of the newest training anchor (its labels end on the holdout's anchor: before the
  holdout, never the holdout itself), then accuracy, precision, recall, F1 and the confusion matrix
  on the holdout at that threshold. The model has trained on that split, so its F1 there
  (``validation_f1``) runs higher than the holdout's;
* MLflow run, registered version aliased ``challenger``, and the gate (a backfill never promotes);
* a report (``reports/training/dt=D/``: metrics JSON and plots) published with its manifest.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import logging
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from include.preference.config import Settings
from include.preference.evaluation.metrics import (
    CUSTOMER,
    PRODUCT,
    classification_metrics,
    decision_metrics,
    ranking_metrics,
    sliced_ranking_metrics,
    top_k,
)
from include.preference.features import spec
from include.preference.storage import (
    ObjectStore,
    PartFile,
    PartitionRef,
    list_partitions,
    publish_files,
    read_table,
    require_manifest,
    scratch_directory,
    upstream_entry,
)
from include.preference.storage.spark_lake import spark_lake

log = logging.getLogger(__name__)


def _inputs_digest(upstream: list[dict[str, Any]], settings: Any) -> str:
    """Names a training's inputs: a retry with the same inputs resumes, changed inputs start afresh."""
    body = json.dumps(
        {"upstream": upstream, "settings": settings.__dict__, "spec": spec.spec_fingerprint()}, sort_keys=True
    )
    return hashlib.sha256(body.encode()).hexdigest()[:16]


def holdout_scores(frame: pd.DataFrame, scores: np.ndarray, k: int) -> dict[str, float]:
    """Classification metrics and recall@K (etc.) over each customer's holdout rows."""
    scored = frame[[CUSTOMER, PRODUCT]].assign(score=np.asarray(scores, dtype=np.float64))
    truth = frame[frame[spec.LABEL] == 1.0][[CUSTOMER, PRODUCT]]
    metrics = ranking_metrics(top_k(scored, k), truth, k)
    metrics.update(classification_metrics(frame[spec.LABEL].to_numpy(), scored["score"].to_numpy()))
    return metrics


def baseline_rankings(frame: pd.DataFrame) -> dict[str, np.ndarray]:
    """Scores that rank the holdout rows as the baselines do: popularity (30-day purchases) and
    buy-again (own purchases, then popularity)."""
    popularity = frame[f"product_purchases_{spec.BUYER_WINDOW}d"].to_numpy(dtype=np.float64)
    normalised = popularity / (popularity.max() + 1.0)
    own = frame["pair_purchases"].to_numpy(dtype=np.float64)
    return {"popularity": normalised, "buy_again": own + normalised}


def baseline_scores(frame: pd.DataFrame, k: int) -> dict[str, dict[str, float]]:
    """Ranking metrics of the baselines on the holdout rows."""
    truth = frame[frame[spec.LABEL] == 1.0][[CUSTOMER, PRODUCT]]
    out = {}
    for name, score in baseline_rankings(frame).items():
        scored = frame[[CUSTOMER, PRODUCT]].assign(score=score)
        out[name] = ranking_metrics(top_k(scored, k), truth, k)
    return out


def holdout_slices(
    frame: pd.DataFrame, rankings: dict[str, np.ndarray], k: int, seed: int
) -> dict[str, dict[str, dict[str, dict[str, float]]]]:
    """Ranking metrics of each ranking (scores over the holdout rows) per RFM value tier and per new
    vs returning customer, the customers sliced by their features as of the holdout anchor."""
    from include.preference.evaluation.slices import customer_slices

    truth = frame[frame[spec.LABEL] == 1.0][[CUSTOMER, PRODUCT]]
    slices = customer_slices(frame, seed=seed)
    return {
        name: sliced_ranking_metrics(top_k(frame[[CUSTOMER, PRODUCT]].assign(score=score), k), truth, k, slices)
        for name, score in rankings.items()
    }


@dataclass(frozen=True)
class TrainingInputs:
    """The published partitions a training of day D reads: the training anchors, then the holdout's."""

    anchors: list[dt.date]
    holdout_anchor: dt.date
    refs: list[PartitionRef]
    manifests: dict[PartitionRef, Any]
    upstream: list[dict[str, Any]]
    files: list[str]  # the training anchors' TFRecord shards, by key in the lake
    rows: int  # the examples in them (every shard's count is in its manifest: the writer counted them)


def training_inputs(store: ObjectStore, settings: Settings, day: dt.date) -> TrainingInputs | str:
    """What the run of ``day`` trains and evaluates on, or why it cannot yet (a sentence).

    The holdout is anchor ``day - H``; training takes the latest ``PREFERENCE_TRAINING_ANCHORS``
    anchors whose label window ends by the holdout's anchor (anchor <= day - 2H).
    """
    horizon = dt.timedelta(days=settings.horizon_days)
    holdout_anchor = day - horizon
    published = set(list_partitions(store, "training"))
    if holdout_anchor not in published:
        return f"holdout anchor {holdout_anchor} has no training partition yet"
    anchors = sorted(a for a in published if a <= holdout_anchor - horizon)[-settings.training_anchors :]
    if not anchors:
        return f"no training anchor on or before {holdout_anchor - horizon}"
    refs = [PartitionRef("training", "", a) for a in (*anchors, holdout_anchor)]
    manifests = {ref: require_manifest(store, ref) for ref in refs}
    # The workers fetch their shards themselves; the driver passes keys, counts and statistics.
    shards = [
        (ref.prefix + entry.path, entry.rows)
        for ref in refs[:-1]
        for entry in manifests[ref].files
        if entry.path.endswith(".tfrecord.gz")
    ]
    return TrainingInputs(
        anchors=anchors,
        holdout_anchor=holdout_anchor,
        refs=refs,
        manifests=manifests,
        upstream=[upstream_entry(store, ref, manifests[ref]) for ref in refs],
        files=[key for key, _ in shards],
        rows=sum(int(count or 0) for _, count in shards),
    )


def run_training_job(
    store: ObjectStore, settings: Settings, day: dt.date, *, run_id: str, backfill: bool
) -> dict[str, Any]:
    """Train, evaluate, register and gate for the run of ``day``; ``{"skipped": reason}`` if not ready."""
    from mlflow.tracking import MlflowClient

    from include.preference.evaluation.plots import evaluation_plots
    from include.preference.model import load_model, predict_frame, spark_feature_statistics
    from include.preference.registry import (
        DEFAULT_EXPERIMENT,
        current_champion,
        fresh_process_canary,
        gate,
        log_training,
        model_name,
    )
    from include.preference.training.launcher import TrainJob, run_job, train_on_spark
    from include.preference.training.trainer import TrainSettings

    k = settings.ranking_k
    chosen = training_inputs(store, settings, day)
    if isinstance(chosen, str):
        return {"date": day.isoformat(), "skipped": chosen}
    anchors, holdout_anchor = chosen.anchors, chosen.holdout_anchor

    from include.preference.spark import spark_session

    with scratch_directory(settings.scratch_dir, f"train-{day}") as scratch:
        refs, manifests, upstream = chosen.refs, chosen.manifests, chosen.upstream
        training_refs = refs[:-1]
        files, rows = chosen.files, chosen.rows
        spark = spark_session("train_model", s3=settings.s3)
        with spark_lake(store, f"train-{day}", {ref: manifests[ref] for ref in training_refs}) as lake:
            stats = spark_feature_statistics(lake.read_days(spark, "training", "", anchors))
        holdout = read_table(store, refs[-1]).to_pandas()
        train_settings = TrainSettings(
            epochs=settings.training_epochs,
            global_batch_size=settings.training_batch_size,
            seed=settings.sampling_seed,
        )
        job = TrainJob(
            files=tuple(files),
            rows=rows,
            stats=stats,
            settings=train_settings,
            s3=settings.s3,
            run_prefix=f"checkpoints/train/dt={day.isoformat()}/{_inputs_digest(upstream, train_settings)}",
        )
        workers = settings.training_workers
        results = train_on_spark(spark, job, workers) if workers > 1 else [run_job(job).to_dict()]
        chief = results[0]
        model_file = scratch / "model.keras"
        store.get_file(job.model_key, model_file)
        model = load_model(model_file)
        scores = predict_frame(model, holdout)
        metrics = holdout_scores(holdout, scores, k)
        validation = read_table(store, training_refs[-1], columns=[*spec.BY_NAME, spec.LABEL]).to_pandas()
        at_threshold = decision_metrics(
            validation[spec.LABEL].to_numpy(),
            predict_frame(model, validation),
            holdout[spec.LABEL].to_numpy(),
            scores,
        )
        del validation
        baselines = baseline_scores(holdout, k)
        slices = holdout_slices(holdout, {"model": scores, **baseline_rankings(holdout)}, k, settings.sampling_seed)
        plots = evaluation_plots(holdout[spec.LABEL].to_numpy(), scores, chief["epochs"], scratch / "plots")

        def score_champion(version: Any) -> float:
            champion = load_model(f"models:/{version.name}/{version.version}")
            return holdout_scores(holdout, predict_frame(champion, holdout), k)["recall_at_k"]

        name = model_name()
        example = {c: holdout[c].head(2).tolist() for c in (f.name for f in spec.FEATURES)}
        logged = log_training(
            model,
            name=name,
            experiment=DEFAULT_EXPERIMENT,
            run_key=f"{day.isoformat()}/{run_id}",
            params={
                "date": day.isoformat(),
                "horizon_days": settings.horizon_days,
                "anchors": ",".join(a.isoformat() for a in anchors),
                "holdout_anchor": holdout_anchor.isoformat(),
                "workers": workers,
                "k": k,
                **{f"train_{key}": value for key, value in train_settings.__dict__.items()},
            },
            metrics={
                **{f"holdout_{key}": value for key, value in metrics.items()},
                **{f"threshold_{key}": value for key, value in at_threshold.items()},
                **{f"{b}_{key}": value for b, values in baselines.items() for key, value in values.items()},
                **{
                    f"holdout_recall_at_k_{slicing}_{label}": values["recall_at_k"]
                    for slicing, groups in slices["model"].items()
                    for label, values in groups.items()
                },
            },
            history=chief["epochs"],
            manifests={"upstream": upstream},
            plots=plots,
            input_example=example,
            tags={
                "logical_date": day.isoformat(),
                "run_id": run_id,
                "code_version": settings.code_version,
                "backfill": str(backfill).lower(),
            },
        )
        client = MlflowClient()
        decision = gate(
            client,
            name,
            logged.version,
            metrics["recall_at_k"],
            {b: v["recall_at_k"] for b, v in baselines.items()},
            score_champion,
            backfill=backfill,
            lock_dir=settings.local_dir / "locks",
            lock_database_url=settings.lock_database_url,
            day=day,
            canary=fresh_process_canary(name, settings.mlflow_tracking_uri),
        )
        champion = current_champion(client, name)
        summary = {
            "date": day.isoformat(),
            "model": name,
            "version": logged.version,
            "mlflow_run_id": logged.run_id,
            "mlflow_experiment_id": logged.experiment_id,
            "champion_version": str(champion.version) if champion is not None else None,
            "gate": decision.to_dict(),
            "k": k,
            "holdout": metrics,
            "threshold_metrics": {**at_threshold, "validation_anchor": anchors[-1].isoformat()},
            "baselines": baselines,
            "slices": slices,
            "anchors": [a.isoformat() for a in anchors],
            "holdout_anchor": holdout_anchor.isoformat(),
            "examples": rows,
            "workers": [
                {key: r[key] for key in ("task_index", "resumed_from_epoch", "weights_sha256")} for r in results
            ],
        }
        publish_training_report(store, settings, day, summary, plots, run_id=run_id, upstream=upstream)
    return summary


def publish_training_report(
    store: ObjectStore,
    settings: Settings,
    day: dt.date,
    summary: dict[str, Any],
    plots: list[Any],
    *,
    run_id: str,
    upstream: list[dict[str, Any]],
) -> None:
    """``reports/training/dt=D/``: ``summary.json`` (version, champion, gate, holdout metrics of the
    model and the baselines, MLflow run id) and the evaluation plots."""
    parts = [PartFile(f"plots/{p.name}", p.read_bytes()) for p in plots]
    parts.append(PartFile("summary.json", json.dumps(summary, indent=2, sort_keys=True).encode()))
    publish_files(
        store,
        PartitionRef("reports", "training", day),
        parts,
        run_id=run_id,
        code_version=settings.code_version,
        upstream=upstream,
        extra={"version": summary["version"], "promoted": summary["gate"].get("promote")},
    )
