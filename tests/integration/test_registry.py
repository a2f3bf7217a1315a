"""Registration and the champion gate against a real MLflow server (artifacts in S3)."""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
import pytest

from include.preference.features import spec
from include.preference.model import build_model, feature_statistics, load_model
from include.preference.registry import (
    CHALLENGER,
    CHAMPION,
    current_champion,
    gate,
    log_training,
    model_requirements,
)

pytestmark = [pytest.mark.integration, pytest.mark.slow]

BASELINES = {"popularity": 0.05, "buy_again": 0.20, "als": 0.10}


def columns(count: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(3)
    return {
        f.name: rng.poisson(2.0, count).astype("float32")
        if f.kind == "numeric"
        else np.array([f"v{i}" for i in rng.integers(0, 4, count)], dtype=object)
        for f in spec.FEATURES
    }


@pytest.fixture
def registry(mlflow_service, monkeypatch, tmp_path):
    from mlflow.tracking import MlflowClient

    for name, value in mlflow_service.client_env().items():
        monkeypatch.setenv(name, value)
    name = f"preference-test-{tmp_path.name[-12:]}".replace("_", "-")
    data = columns(32)
    model = build_model(feature_statistics(data))
    example = {k: v[:2].tolist() for k, v in data.items()}
    holdout_recall: dict[str, float] = {}

    def register(key: str, recall: float, plots: list[Path] | None = None):
        logged = log_training(
            model,
            name=name,
            experiment=name,
            run_key=key,
            params={"epochs": 1},
            metrics={"recall_at_k": recall},
            history=[{"epoch": 1.0, "loss": 0.5}],
            manifests={"training": {"rows": 32}},
            plots=plots or [],
            input_example=example,
            tags={"logical_date": "2025-03-01"},
        )
        holdout_recall[logged.version] = recall
        return logged

    def run_gate(version: str, backfill: bool = False):
        # The champion "scored on the challenger's holdout": its recorded recall in this test.
        return gate(
            MlflowClient(),
            name,
            version,
            holdout_recall[version],
            BASELINES,
            lambda champion: holdout_recall[str(champion.version)],
            backfill=backfill,
            lock_dir=tmp_path / "locks",
        )

    return MlflowClient(), name, register, run_gate


def test_a_worse_model_is_registered_but_not_promoted_and_a_backfill_never_promotes(registry, tmp_path):
    client, name, register, run_gate = registry
    plot = tmp_path / "roc.png"
    plot.write_bytes(b"\x89PNG\r\n\x1a\n")
    first = register("run-1", 0.30, [plot])
    assert run_gate(first.version).promote
    # The experiment opens in MLflow's UI as model training, not GenAI traces.
    assert client.get_experiment_by_name(name).tags["mlflow.experimentKind"] == "custom_model_development"
    assert current_champion(client, name).version == first.version

    worse = register("run-2", 0.25)
    decision = run_gate(worse.version)
    assert not decision.promote and decision.champion_version == first.version
    assert client.get_model_version_by_alias(name, CHALLENGER).version == worse.version
    assert client.get_model_version_by_alias(name, CHAMPION).version == first.version
    assert client.get_model_version(name, worse.version).tags["gate"] == "rejected"

    backfill = register("run-3", 0.90)
    assert not run_gate(backfill.version, backfill=True).promote
    assert client.get_model_version_by_alias(name, CHAMPION).version == first.version
    artifacts = {a.path for a in client.list_artifacts(first.run_id, "plots")}
    assert artifacts == {"plots/roc.png"}
    # The champion loads back from the registry (artifacts in S3) and scores raw feature columns.
    loaded = load_model(f"models:/{name}@{CHAMPION}")
    scores = loaded.predict(columns(4), verbose=0)
    assert scores.shape == (4, 1) and ((scores > 0) & (scores < 1)).all()
    # Its environment names the backend it runs on, at the versions it was trained with.
    import mlflow

    requirements = Path(mlflow.artifacts.download_artifacts(f"runs:/{first.run_id}/model/requirements.txt"))
    pinned = set(requirements.read_text().split())
    assert set(model_requirements()) <= pinned
    assert any(p.startswith(("tensorflow-cpu==", "tensorflow==")) for p in pinned), pinned


def test_a_retried_gate_leaves_the_decision_the_aliases_and_the_tags_as_they_were(registry):
    client, name, register, run_gate = registry
    first = register("run-1", 0.30)
    promoted = run_gate(first.version)
    assert promoted.promote and current_champion(client, name).version == first.version
    before = dict(client.get_model_version(name, first.version).tags)
    assert before["gate"] == "promoted"
    # The task retried (or cleared): same version, gated again, now the champion itself.
    again = run_gate(first.version)
    assert again == promoted
    assert dict(client.get_model_version(name, first.version).tags) == before
    assert client.get_model_version_by_alias(name, CHAMPION).version == first.version

    # A rejected version stays rejected on a retry, even after a later champion is gone.
    worse = register("run-2", 0.25)
    rejected = run_gate(worse.version)
    assert not rejected.promote
    client.delete_registered_model_alias(name, CHAMPION)
    assert run_gate(worse.version) == rejected
    assert client.get_model_version(name, worse.version).tags["gate"] == "rejected"
    assert current_champion(client, name) is None

    # An attempt that moved the alias and stopped before recording its decision: the retry records
    # the promotion instead of meeting itself as champion.
    third = register("run-3", 0.40)
    client.set_registered_model_alias(name, CHAMPION, third.version)
    recovered = run_gate(third.version)
    assert recovered.promote and "earlier attempt" in recovered.reason
    assert client.get_model_version(name, third.version).tags["gate"] == "promoted"
    assert current_champion(client, name).version == third.version


def test_a_retried_registration_reuses_its_run_and_version(registry):
    client, name, register, _ = registry
    first = register("same-key", 0.3)
    again = register("same-key", 0.3)
    assert (again.run_id, again.version) == (first.run_id, first.version)
    assert len(client.search_model_versions(f"name = '{name}'")) == 1


def test_two_challengers_finishing_at_once_leave_the_better_one_as_champion(registry):
    client, name, register, run_gate = registry
    base = register("base", 0.21)
    assert run_gate(base.version).promote
    contenders = [register("a", 0.40), register("b", 0.35)]
    start = threading.Barrier(len(contenders))
    decisions = {}

    def finish(version: str) -> None:
        start.wait()
        decisions[version] = run_gate(version)

    threads = [threading.Thread(target=finish, args=(c.version,)) for c in contenders]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert client.get_model_version_by_alias(name, CHAMPION).version == contenders[0].version
    # Whichever went second compared itself with the champion the first one left: the better one
    # always wins; the lesser one wins only when it went first, and then the better one met it.
    better, lesser = (decisions[c.version] for c in contenders)
    assert better.promote
    if lesser.promote:
        assert (lesser.champion_version, better.champion_version) == (base.version, contenders[1].version)
    else:
        assert (better.champion_version, lesser.champion_version) == (base.version, contenders[0].version)


# One promotion in a process of its own: waits for the start time, then runs the gate (the champion
# is "scored" slowly, so both contenders read the champion before either can move it).
RACER = """
import json, sys, time
from pathlib import Path
from mlflow.tracking import MlflowClient
from include.preference.registry import gate
name, version, start, lock_dir, lock_url, scores = sys.argv[1:7]
scores = json.loads(scores)
def score_champion(champion):
    time.sleep(2.0)
    return scores[str(champion.version)]
time.sleep(max(0.0, float(start) - time.time()))
decision = gate(MlflowClient(), name, version, scores[version], json.loads(sys.argv[7]), score_champion,
                backfill=False, lock_dir=Path(lock_dir), lock_database_url=lock_url or None)
print(json.dumps({"version": version, "promote": decision.promote, "reason": decision.reason}))
"""


def _race(registry, database_url: str | None, tmp_path: Path) -> list[dict]:
    """Two equal challengers promoted at the same instant from two processes, each in a mount
    namespace of its own: a tmpfs over the other's folder and over its own lock folder."""
    import json
    import os
    import subprocess
    import sys
    import time

    from tests.support.namespaces import private

    client, name, register, run_gate = registry
    base = register("base", 0.21)
    assert run_gate(base.version).promote
    contenders = [register(f"racer-{i}", 0.40) for i in range(2)]
    scores = {base.version: 0.21, **{c.version: 0.40 for c in contenders}}
    homes = [tmp_path / f"host-{i}" for i in range(2)]
    start = time.time() + 8.0
    processes = []
    for index, contender in enumerate(contenders):
        lock_dir = homes[index] / "locks"  # the same path inside each namespace, a different disk
        hide = [homes[1 - index], lock_dir]
        command = [
            sys.executable, "-c", RACER, name, contender.version, str(start), str(lock_dir),
            database_url or "", json.dumps(scores), json.dumps(BASELINES),
        ]  # fmt: skip
        processes.append(
            subprocess.Popen(
                private(command, hide), env=os.environ.copy(), stdout=subprocess.PIPE, stderr=subprocess.PIPE
            )
        )
    results = []
    for process in processes:
        out, err = process.communicate(timeout=180)
        assert process.returncode == 0, err.decode()[-3000:]
        results.append(json.loads(out.decode().strip().splitlines()[-1]))
    return results


def test_two_promotions_racing_from_processes_that_share_no_disk_exactly_one_wins(registry, database_servers, tmp_path):
    from tests.support.namespaces import require_namespaces

    require_namespaces()
    client, name, _, _ = registry
    lock_url = f"{database_servers.database_server_url}/postgres"
    results = _race(registry, lock_url, tmp_path)
    winners = [r["version"] for r in results if r["promote"]]
    assert len(winners) == 1, results
    assert client.get_model_version_by_alias(name, CHAMPION).version == winners[0]
    loser = next(r for r in results if not r["promote"])
    assert f"champion v{winners[0]}" in loser["reason"]


def test_without_a_shared_lock_both_racers_promote(registry, tmp_path):
    """The control: file locks on disks that are not shared do not serialise the two promotions."""
    from tests.support.namespaces import require_namespaces

    require_namespaces()
    results = _race(registry, None, tmp_path)
    assert [r["promote"] for r in results] == [True, True], results


def test_a_model_that_cannot_load_in_a_fresh_process_is_not_promoted(mlflow_service, monkeypatch, tmp_path):
    """The canary loads the registered version from MLflow in a new Python process before the alias
    moves: a model with a custom layer only the training process knows loads here, fails there, and
    stays a challenger; the same model without that layer passes and is promoted."""
    import keras
    from mlflow.tracking import MlflowClient

    from include.preference.registry import fresh_process_canary

    for key, value in mlflow_service.client_env().items():
        monkeypatch.setenv(key, value)

    @keras.saving.register_keras_serializable(package="only_in_this_test_process")
    class Doubled(keras.layers.Layer):
        def call(self, inputs):
            return inputs * 0.5

    data = columns(32)
    plain = build_model(feature_statistics(data))
    custom = keras.Model(plain.input, Doubled(name="doubled")(plain.output))
    name = f"canary-test-{tmp_path.name[-12:]}".replace("_", "-")
    client = MlflowClient()

    def register(model, key: str) -> str:
        return log_training(
            model,
            name=name,
            experiment=name,
            run_key=key,
            params={},
            metrics={"recall_at_k": 0.5},
            history=[],
            manifests={},
            plots=[],
            input_example={k: v[:2].tolist() for k, v in data.items()},
            tags={},
        ).version

    def run_gate(version: str):
        return gate(
            client,
            name,
            version,
            0.5,
            BASELINES,
            lambda champion: 0.0,
            backfill=False,
            lock_dir=tmp_path / "locks",
            canary=fresh_process_canary(name, mlflow_service.mlflow_uri),
        )

    broken = register(custom, "custom-layer")
    assert load_model(f"models:/{name}/{broken}") is not None  # it loads in this process, which knows the layer
    refused = run_gate(broken)
    assert not refused.promote and "canary failed" in refused.reason and "Doubled" in refused.reason, refused
    assert current_champion(client, name) is None
    assert client.get_model_version(name, broken).tags["gate"] == "rejected"

    fine = register(plain, "plain")
    assert run_gate(fine).promote
    assert current_champion(client, name).version == fine
