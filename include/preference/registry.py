"""MLflow: one run per training, the registered model, and the gate that moves ``champion``.

Every trained model is registered as a new version of ``PREFERENCE_MODEL_NAME`` and gets the alias
``challenger``. The gate moves ``champion`` to it only when, on the same holdout, its recall@K beats
both the current champion's and the best baseline's. A backfill (a run for a past date) or a failed
gate never moves ``champion``.

Two trainings finishing at once must not both read "champion is v1" and then overwrite each other.
The decision and the alias swap happen under one lock per registered model that every host sees:
a PostgreSQL advisory lock when ``PREFERENCE_LOCK_DATABASE_URL`` names a database (the production
profile sets it to MLflow's), held by a connection of its own, so a killed holder releases it when
its connection drops. The embedded profile, one machine by definition, uses a file lock under
``PREFERENCE_LOCAL_DIR``. Under the lock the champion is read again; if it changed since the
challenger was compared, the new champion is scored on the challenger's holdout before deciding.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import fcntl
import hashlib
import json
import logging
import os
import tempfile
from collections.abc import Callable, Iterator, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

CHAMPION = "champion"
# Tag on a promoted version: the logical date from which it served as champion.
CHAMPION_SINCE = "champion_since"
CHALLENGER = "challenger"
DEFAULT_MODEL_NAME = "customer-preference"
DEFAULT_EXPERIMENT = "customer-preference"
GATE_METRIC = "recall_at_k"
# The customer profile autoencoder's gate: its mean reconstruction error on the holdout, lower wins.
PROFILE_GATE_METRIC = "reconstruction_error"
PROFILE_SUFFIX = "-profile"


def model_name(env: Mapping[str, str] | None = None) -> str:
    return (env if env is not None else os.environ).get("PREFERENCE_MODEL_NAME") or DEFAULT_MODEL_NAME


def profile_model_name(env: Mapping[str, str] | None = None) -> str:
    """The customer profile autoencoder's registered name: the preference model's, suffixed."""
    return model_name(env) + PROFILE_SUFFIX


@dataclass(frozen=True)
class GateDecision:
    promote: bool
    reason: str
    challenger: float
    champion: float | None
    champion_version: str | None
    best_baseline: str | None
    baseline: float | None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def decide(
    challenger: float,
    champion: float | None,
    baselines: Mapping[str, float],
    *,
    backfill: bool,
    champion_version: str | None = None,
    metric: str = GATE_METRIC,
    lower_is_better: bool = False,
) -> GateDecision:
    """The gate's rule (pure): strictly better than the champion and than every baseline.

    Better is higher ``metric`` (recall@K), or lower with ``lower_is_better`` (an error).
    """

    def beats(a: float, b: float) -> bool:
        return a < b if lower_is_better else a > b

    pick = min if lower_is_better else max
    best = pick(baselines, key=lambda name: baselines[name]) if baselines else None
    baseline = baselines[best] if best else None

    def verdict(promote: bool, reason: str) -> GateDecision:
        return GateDecision(promote, reason, challenger, champion, champion_version, best, baseline)

    if backfill:
        return verdict(False, "backfill runs never move the champion")
    if baseline is not None and not beats(challenger, baseline):
        return verdict(False, f"{metric} {challenger:.4f} does not beat the best baseline {best} ({baseline:.4f})")
    if champion is not None and not beats(challenger, champion):
        return verdict(False, f"{metric} {challenger:.4f} does not beat champion v{champion_version} ({champion:.4f})")
    if champion is None:
        return verdict(True, "no champion yet and the challenger beats the baselines")
    return verdict(True, f"{metric} {challenger:.4f} beats champion v{champion_version} ({champion:.4f})")


def lock_key(name: str) -> int:
    """The advisory lock's 64-bit key for a registered model (stable across hosts and versions)."""
    digest = hashlib.sha256(f"customer-preference-registry:{name}".encode()).digest()
    return int.from_bytes(digest[:8], "big", signed=True)


@contextlib.contextmanager
def registry_lock(name: str, directory: Path, database_url: str | None = None) -> Iterator[None]:
    """An exclusive lock per registered model (blocks until free).

    ``database_url`` (PostgreSQL): an advisory lock on that server, the same for every host.
    Without it, a file lock in ``directory``: one machine only.
    """
    if database_url:
        import psycopg

        url = database_url.replace("postgresql+psycopg2://", "postgresql://").replace(
            "postgresql+psycopg://", "postgresql://"
        )
        with psycopg.connect(url, autocommit=True) as connection:
            connection.execute("SELECT pg_advisory_lock(%s)", (lock_key(name),))
            try:
                yield
            finally:
                connection.execute("SELECT pg_advisory_unlock(%s)", (lock_key(name),))
        return
    directory.mkdir(parents=True, exist_ok=True)
    with (directory / f"registry-{name}.lock").open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def current_champion(client: Any, name: str) -> Any | None:
    """The model version behind ``champion``, or None."""
    from mlflow.exceptions import MlflowException

    try:
        return client.get_model_version_by_alias(name, CHAMPION)
    except MlflowException as error:
        if "RESOURCE_DOES_NOT_EXIST" in str(error.error_code) or "not found" in str(error).lower():
            return None
        raise


def champion_as_of(client: Any, name: str, day: dt.date) -> Any | None:
    """The version that was champion on ``day``.

    The current champion when it was promoted on or before ``day`` (or carries no date); otherwise
    the latest version promoted on or before ``day``; None when no version was champion yet.
    """
    current = current_champion(client, name)
    since = (current.tags or {}).get(CHAMPION_SINCE) if current is not None else None
    if current is not None and (since is None or dt.date.fromisoformat(since) <= day):
        return current
    promoted = [
        v
        for v in client.search_model_versions(f"name = '{_quoted(name)}'")
        if (v.tags or {}).get(CHAMPION_SINCE) and dt.date.fromisoformat(v.tags[CHAMPION_SINCE]) <= day
    ]
    if not promoted:
        return None
    return max(promoted, key=lambda v: (v.tags[CHAMPION_SINCE], int(v.version)))


def gate(
    client: Any,
    name: str,
    version: str,
    challenger: float,
    baselines: Mapping[str, float],
    score_champion: Callable[[Any], float],
    *,
    backfill: bool,
    lock_dir: Path,
    lock_database_url: str | None = None,
    day: dt.date | None = None,
    metric: str = GATE_METRIC,
    lower_is_better: bool = False,
    canary: Callable[[str], str | None] | None = None,
) -> GateDecision:
    """Decide under the lock and move ``champion`` if the challenger wins; tag the version either way.

    ``canary(version)``: run before the alias moves (e.g. :func:`fresh_process_canary`); a reason
    it returns keeps the champion where it is and is recorded as the decision.

    ``score_champion(model_version)`` returns the champion's ``metric`` (recall@K unless told) on
    the challenger's holdout; ``lower_is_better`` for an error.
    A promoted version is tagged ``champion_since`` with ``day`` (the run's logical date), so a
    backfill of a past date can score with the model that was champion then.

    A version is gated once: a retried or cleared task finds the decision recorded on the version
    (``gate_decision``) and returns it, leaving the aliases and tags as they are (gated again, a
    promoted version would meet itself as champion, tie, and be tagged rejected).
    """
    with registry_lock(name, lock_dir, lock_database_url):
        recorded = client.get_model_version(name, version).tags.get("gate_decision")
        if recorded:
            earlier = GateDecision(**json.loads(recorded))
            log.info("%s v%s was gated before (%s); keeping that decision", name, version, earlier.reason)
            return earlier
        champion = current_champion(client, name)
        champion_version = str(champion.version) if champion is not None else None
        if champion_version == str(version):
            # An earlier attempt moved the alias and stopped before recording its decision.
            best = (min if lower_is_better else max)(baselines, key=lambda b: baselines[b]) if baselines else None
            decision = GateDecision(
                True,
                "promoted by an earlier attempt of this run",
                challenger,
                None,
                None,
                best,
                baselines[best] if best else None,
            )
        else:
            champion_score = score_champion(champion) if champion is not None and not backfill else None
            decision = decide(
                challenger,
                champion_score,
                baselines,
                backfill=backfill,
                champion_version=champion_version,
                metric=metric,
                lower_is_better=lower_is_better,
            )
            problem = canary(str(version)) if decision.promote and canary is not None else None
            if problem:
                decision = dataclasses.replace(
                    decision, promote=False, reason=f"{decision.reason}, but the canary failed: {problem}"
                )
        if decision.promote:
            if day is not None:
                client.set_model_version_tag(name, version, CHAMPION_SINCE, day.isoformat())
            client.set_registered_model_alias(name, CHAMPION, version)
        client.set_model_version_tag(name, version, "gate", "promoted" if decision.promote else "rejected")
        client.set_model_version_tag(name, version, "gate_decision", json.dumps(decision.to_dict()))
    log.info("gate for %s v%s: %s (%s)", name, version, "promoted" if decision.promote else "kept", decision.reason)
    return decision


def fresh_process_canary(name: str, tracking_uri: str | None = None) -> Callable[[str], str | None]:
    """A gate canary: version -> None when ``models:/<name>/<version>`` loads and scores a batch in
    a fresh Python process (:mod:`include.preference.canary`), else the reason it did not."""
    from include.preference.canary import run_canary

    return lambda version: run_canary(f"models:/{name}/{version}", tracking_uri)


@dataclass(frozen=True)
class LoggedModel:
    run_id: str
    version: str
    model_uri: str
    experiment_id: str = ""


def log_training(
    model: Any,
    *,
    name: str,
    experiment: str,
    run_key: str,
    params: Mapping[str, Any],
    metrics: Mapping[str, float],
    history: list[Mapping[str, float]],
    manifests: Mapping[str, Any],
    plots: list[Path],
    input_example: Any,
    tags: Mapping[str, str],
    signature: Any = None,
) -> LoggedModel:
    """One MLflow run: params, metrics (epochs as steps), plots, data manifests, the model registered.

    ``run_key`` identifies the training (DAG run and date): a retry finds the run an earlier attempt
    finished instead of registering the model twice; runs an attempt left unfinished are deleted.
    The new version gets the alias ``challenger``. ``signature``: the model's MLflow signature (the
    preference model's, from the feature spec, unless told).
    """
    import mlflow
    from mlflow.tracking import MlflowClient

    from include.preference.features import spec

    client = MlflowClient()
    experiment_id = experiment_id_for(client, experiment)
    existing = client.search_runs([experiment_id], filter_string=f"tags.run_key = '{_quoted(run_key)}'")
    for run in existing:
        if run.info.status == "FINISHED" and run.data.tags.get("registered_version"):
            version = run.data.tags["registered_version"]
            log.info("run %s already registered %s v%s; reusing it", run.info.run_id, name, version)
            return LoggedModel(run.info.run_id, version, f"models:/{name}/{version}", run.info.experiment_id)
        _delete_ghost(client, name, run.info.run_id)

    with mlflow.start_run(experiment_id=experiment_id, run_name=run_key, tags={**tags, "run_key": run_key}) as run:
        mlflow.log_params({k: str(v)[:500] for k, v in params.items()})
        mlflow.log_metrics({k: float(v) for k, v in metrics.items()})
        for entry in history:
            mlflow.log_metrics(
                {f"train_{k}": float(v) for k, v in entry.items() if k != "epoch"}, step=int(entry["epoch"])
            )
        mlflow.log_dict(dict(manifests), "data/manifests.json")
        for path in plots:
            mlflow.log_artifact(str(path), "plots")
        # mlflow.keras.log_model writes the input example before creating its folder (MLflow
        # 3.17), so the model is saved into a folder made here, logged, then registered.
        with tempfile.TemporaryDirectory() as scratch:
            folder = Path(scratch) / "model"
            folder.mkdir()
            mlflow.keras.save_model(
                model,
                str(folder),
                signature=signature if signature is not None else spec.mlflow_signature(),
                input_example=input_example,
                pip_requirements=model_requirements(),
            )
            mlflow.log_artifacts(str(folder), "model")
        registered = mlflow.register_model(f"runs:/{run.info.run_id}/model", name)
        version = str(registered.version)
        mlflow.set_tag("registered_version", version)
    client.set_registered_model_alias(name, CHALLENGER, version)
    return LoggedModel(run.info.run_id, version, f"models:/{name}/{version}", run.info.experiment_id)


# What loading the model needs: Keras, its TensorFlow backend, NumPy (each the first installed of its names).
MODEL_DISTRIBUTIONS = (("keras",), ("tensorflow-cpu", "tensorflow"), ("numpy",))


def model_requirements() -> list[str]:
    """The model's pip requirements: the versions this process trains with, pinned.

    Named rather than inferred: MLflow's inference loads the saved model in a subprocess (about
    9 s a registration) and, failing on the project's custom layer, falls back to Keras alone,
    without the backend the model runs on.
    """
    from importlib.metadata import PackageNotFoundError, version

    pinned = []
    for names in MODEL_DISTRIBUTIONS:
        for name in names:
            try:
                pinned.append(f"{name}=={version(name)}")
                break
            except PackageNotFoundError:
                continue
        else:
            raise RuntimeError(f"none of {', '.join(names)} is installed: the model cannot be loaded")
    return pinned


def log_report_run(
    tracking_uri: str,
    experiment: str,
    run_key: str,
    metrics: Mapping[str, float],
    artifacts: list[Path],
    tags: Mapping[str, str],
) -> str:
    """One MLflow run per report (task and date): a finished run with the same key is kept as is,
    an unfinished one (an interrupted attempt) is deleted and logged again. Returns the run id."""
    import mlflow
    from mlflow.tracking import MlflowClient

    mlflow.set_tracking_uri(tracking_uri)
    client = MlflowClient(tracking_uri)
    experiment_id = experiment_id_for(client, experiment)
    for run in client.search_runs([experiment_id], filter_string=f"tags.run_key = '{_quoted(run_key)}'"):
        if run.info.status == "FINISHED":
            return str(run.info.run_id)
        client.delete_run(run.info.run_id)
    with mlflow.start_run(experiment_id=experiment_id, run_name=run_key, tags={**tags, "run_key": run_key}) as run:
        mlflow.log_metrics(dict(metrics))
        for path in artifacts:
            mlflow.log_artifact(str(path), "plots")
    return str(run.info.run_id)


def _quoted(value: str) -> str:
    return value.replace("\\", "\\\\").replace("'", "\\'")


# MLflow 3's UI opens an experiment as GenAI work (traces, tokens, cost) unless its kind says otherwise.
EXPERIMENT_KIND_TAG = "mlflow.experimentKind"
EXPERIMENT_KIND = "custom_model_development"


def experiment_id_for(client: Any, experiment: str) -> str:
    """The id of the named MLflow experiment, created when missing (safe against a concurrent create)
    and tagged as model training, so MLflow's UI opens it on its runs and models."""
    found = client.get_experiment_by_name(experiment)
    if found is None:
        from mlflow.exceptions import MlflowException

        with contextlib.suppress(MlflowException):  # created meanwhile by a concurrent run
            client.create_experiment(experiment, tags={EXPERIMENT_KIND_TAG: EXPERIMENT_KIND})
        found = client.get_experiment_by_name(experiment)
    if found.tags.get(EXPERIMENT_KIND_TAG) != EXPERIMENT_KIND:  # experiments made before the tag
        client.set_experiment_tag(found.experiment_id, EXPERIMENT_KIND_TAG, EXPERIMENT_KIND)
    return str(found.experiment_id)


def _delete_ghost(client: Any, name: str, run_id: str) -> None:
    """Remove what an interrupted attempt left: its model versions, then the run."""
    for version in client.search_model_versions(f"run_id = '{run_id}'"):
        if version.name == name:
            client.delete_model_version(name, version.version)
    client.delete_run(run_id)
    log.info("deleted run %s left unfinished by an earlier attempt", run_id)
