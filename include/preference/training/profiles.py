"""The customer profile's training job: the autoencoder of :mod:`include.preference.profiles`,
trained, evaluated, registered and gated the way the preference model is.

For the run of day D, on the same published training partitions as ``train_model``:

* training: the customer features of the training anchors' examples, through the same distributed
  loop (one process, or ``PREFERENCE_TRAINING_WORKERS`` workers in a Spark barrier stage) with
  checkpoints under ``checkpoints/profile/dt=D/<inputs digest>/``, so a retried task resumes;
* evaluation on the holdout anchor's customers (one row per customer): the mean reconstruction
  error, against the error of reconstructing every customer as the mean of the newest training
  anchor's customers (``mean_profile``, the obvious alternative);
* MLflow: its own run and registered model (``<model name>-profile``), version aliased
  ``challenger``; the gate moves ``champion`` when the error is strictly below the mean profile's
  and the champion profile's on the same holdout (a backfill never promotes);
* a report ``reports/profile_training/dt=D/summary.json`` with its manifest.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
from typing import Any

import pandas as pd

from include.preference.config import Settings
from include.preference.storage import (
    ObjectStore,
    PartFile,
    PartitionRef,
    publish_files,
    read_table,
    scratch_directory,
)
from include.preference.storage.spark_lake import spark_lake

log = logging.getLogger(__name__)

REPORT = "profile_training"


def customers_of(store: ObjectStore, ref: PartitionRef) -> pd.DataFrame:
    """One row per customer of a training partition: the customer's features (identical on every
    example row of the customer, computed as of the anchor)."""
    from include.preference.profiles import PROFILE_FEATURES

    table = read_table(store, ref, columns=["customer_id", *PROFILE_FEATURES]).to_pandas()
    return table.drop_duplicates("customer_id").sort_values("customer_id").reset_index(drop=True)


def run_profile_training_job(
    store: ObjectStore, settings: Settings, day: dt.date, *, run_id: str, backfill: bool
) -> dict[str, Any]:
    """Train, evaluate, register and gate the profile for the run of ``day``; ``{"skipped": reason}``
    when the training partitions it needs are not published yet."""
    from mlflow.tracking import MlflowClient

    from include.preference.model import load_model, spark_feature_statistics
    from include.preference.profiles import PROFILE_DIM, PROFILE_FEATURES, mean_profile_error, profile_signature
    from include.preference.registry import (
        DEFAULT_EXPERIMENT,
        PROFILE_GATE_METRIC,
        current_champion,
        fresh_process_canary,
        gate,
        log_training,
        profile_model_name,
    )
    from include.preference.spark import spark_session
    from include.preference.training.jobs import _inputs_digest, training_inputs
    from include.preference.training.launcher import TrainJob, run_job, train_on_spark
    from include.preference.training.trainer import TrainSettings

    chosen = training_inputs(store, settings, day)
    if isinstance(chosen, str):
        return {"date": day.isoformat(), "skipped": chosen}
    training_refs, holdout_ref = chosen.refs[:-1], chosen.refs[-1]
    with scratch_directory(settings.scratch_dir, f"profile-{day}") as scratch:
        spark = spark_session("train_profile_model", s3=settings.s3)
        with spark_lake(store, f"profile-{day}", {ref: chosen.manifests[ref] for ref in training_refs}) as lake:
            stats = spark_feature_statistics(lake.read_days(spark, "training", "", chosen.anchors))
        train_settings = TrainSettings(
            epochs=settings.training_epochs,
            global_batch_size=settings.training_batch_size,
            seed=settings.sampling_seed,
        )
        job = TrainJob(
            files=tuple(chosen.files),
            rows=chosen.rows,
            stats=stats,
            settings=train_settings,
            s3=settings.s3,
            run_prefix=f"checkpoints/profile/dt={day.isoformat()}/{_inputs_digest(chosen.upstream, train_settings)}",
            model_kind="profile",
        )
        workers = settings.training_workers
        results = train_on_spark(spark, job, workers) if workers > 1 else [run_job(job).to_dict()]
        model_file = scratch / "profile.keras"
        store.get_file(job.model_key, model_file)
        model = load_model(model_file)
        holdout = customers_of(store, holdout_ref)
        reference = customers_of(store, training_refs[-1])
        measured = mean_profile_error(model, holdout, reference)
        error, baseline = measured["reconstruction_error"], measured["mean_profile_error"]

        def score_champion(version: Any) -> float:
            champion = load_model(f"models:/{version.name}/{version.version}")
            return mean_profile_error(champion, holdout, reference)["reconstruction_error"]

        name = profile_model_name()
        logged = log_training(
            model,
            name=name,
            experiment=DEFAULT_EXPERIMENT,
            run_key=f"profile/{day.isoformat()}/{run_id}",
            params={
                "date": day.isoformat(),
                "kind": "customer profile autoencoder",
                "profile_dim": PROFILE_DIM,
                "anchors": ",".join(a.isoformat() for a in chosen.anchors),
                "holdout_anchor": chosen.holdout_anchor.isoformat(),
                "workers": workers,
                **{f"train_{key}": value for key, value in train_settings.__dict__.items()},
            },
            metrics={
                f"holdout_{PROFILE_GATE_METRIC}": error,
                f"mean_profile_{PROFILE_GATE_METRIC}": baseline,
                "holdout_customers": float(measured["customers"]),
            },
            history=results[0]["epochs"],
            manifests={"upstream": chosen.upstream},
            plots=[],
            input_example={c: holdout[c].head(2).tolist() for c in PROFILE_FEATURES},
            tags={
                "logical_date": day.isoformat(),
                "run_id": run_id,
                "code_version": settings.code_version,
                "backfill": str(backfill).lower(),
                "model_kind": "profile",
            },
            signature=profile_signature(),
        )
        client = MlflowClient()
        decision = gate(
            client,
            name,
            logged.version,
            error,
            {"mean_profile": baseline},
            score_champion,
            backfill=backfill,
            lock_dir=settings.local_dir / "locks",
            lock_database_url=settings.lock_database_url,
            day=day,
            metric=PROFILE_GATE_METRIC,
            lower_is_better=True,
            canary=fresh_process_canary(name, settings.mlflow_tracking_uri),
        )
        champion = current_champion(client, name)
        summary = {
            "date": day.isoformat(),
            "model": name,
            "version": logged.version,
            "mlflow_run_id": logged.run_id,
            "champion_version": str(champion.version) if champion is not None else None,
            "gate": decision.to_dict(),
            "holdout": measured,
            "profile_dim": PROFILE_DIM,
            "anchors": [a.isoformat() for a in chosen.anchors],
            "holdout_anchor": chosen.holdout_anchor.isoformat(),
            "examples": chosen.rows,
            "workers": [
                {key: r[key] for key in ("task_index", "resumed_from_epoch", "weights_sha256")} for r in results
            ],
        }
        publish_files(
            store,
            PartitionRef("reports", REPORT, day),
            [PartFile("summary.json", json.dumps(summary, indent=2, sort_keys=True).encode())],
            run_id=run_id,
            code_version=settings.code_version,
            upstream=chosen.upstream,
            extra={"version": logged.version, "promoted": decision.promote},
        )
    log.info("profile v%s: holdout error %.4f (mean profile %.4f)", logged.version, error, baseline)
    return summary
