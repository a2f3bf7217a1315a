"""Distributed training for real: two TensorFlow workers in a Spark barrier stage that fetch their
shards from S3 and leave their state there, and a worker killed mid-training whose retried job
resumes from the checkpoint in S3."""

from __future__ import annotations

import json
import os
import secrets
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from include.preference.model import build_model, feature_statistics, load_model
from include.preference.training.launcher import TrainJob, job_to_json, train_on_spark
from include.preference.training.trainer import TrainSettings, weights_digest

pytestmark = [pytest.mark.integration, pytest.mark.slow]

PROJECT_ROOT = Path(__file__).resolve().parents[3]
# The killed job's epochs: killed after the first is checkpointed, the retry runs the rest.
EPOCHS = 4


def job_for(training_sets, **settings) -> TrainJob:
    """A job over the session's training shards, by their keys in the lake, with a run prefix of its own."""
    lake = training_sets["lake"]
    frame = training_sets["frame"](training_sets["train"][0])
    stats = feature_statistics({c: frame[c].to_numpy() for c in frame.columns})
    sets = training_sets["sets"]
    files = [
        lake.prefix(sets[d]["ref"]) + name
        for d in training_sets["train"]
        for name in sorted(sets[d]["counts"]["shards"])
    ]
    return TrainJob(
        files=tuple(files),
        rows=training_sets["rows"],
        stats=stats,
        settings=TrainSettings(**{"epochs": 2, "global_batch_size": 128, **settings}),
        s3=lake.store.settings,
        run_prefix=f"checkpoints/test-{secrets.token_hex(4)}",
        worker_host="127.0.0.1",
    )


def test_two_workers_end_with_identical_weights(training_sets, spark, tmp_path):
    import keras

    job = job_for(training_sets)
    store = training_sets["lake"].store
    results = train_on_spark(spark, job, workers=2)

    assert [r["task_index"] for r in results] == [0, 1]
    assert all(r["workers"] == 2 for r in results)
    assert [len(r["epochs"]) for r in results] == [2, 2]
    # Both saw the same (all-reduced) loss and ended with the same weights, bit for bit.
    assert results[0]["weights_sha256"] == results[1]["weights_sha256"]
    assert [e["loss"] for e in results[0]["epochs"]] == [e["loss"] for e in results[1]["epochs"]]
    # The chief uploaded its model, which holds those weights, and they moved away from the initial ones.
    assert results[0]["model_path"] == store.uri(job.model_key)
    store.get_file(job.model_key, tmp_path / "model.keras")
    saved = load_model(tmp_path / "model.keras")
    assert weights_digest([np.asarray(w) for w in saved.get_weights()]) == results[0]["weights_sha256"]
    keras.utils.set_random_seed(job.settings.seed)
    initial = build_model(job.stats, job.model_config)
    assert weights_digest([np.asarray(w) for w in initial.get_weights()]) != results[0]["weights_sha256"]
    assert results[1]["model_path"] is None
    # Each worker reported its progress through S3, not a shared disk.
    for index in (0, 1):
        status = json.loads(store.get_bytes(f"{job.run_prefix}/workers/{index}.json"))
        assert status["state"] == "done" and status["weights_sha256"] == results[index]["weights_sha256"]


def _checkpointed_epoch(store, prefix: str) -> int:
    key = f"{prefix}/checkpoint"
    if not store.exists(key):
        return 0
    text = store.get_bytes(key).decode()
    return int(text.split('model_checkpoint_path: "ckpt-')[1].split('"')[0])


def test_a_killed_worker_is_resumed_from_the_checkpoint_in_storage(training_sets, s3_service, tmp_path):
    store = training_sets["lake"].store
    job = job_for(training_sets, epochs=EPOCHS, global_batch_size=32)
    prefix = f"{job.run_prefix}/checkpoint"
    job_file = tmp_path / "job.json"
    job_file.write_text(job_to_json(job))
    command = [sys.executable, "-m", "include.preference.training.launcher", str(job_file), "--workers", "2"]
    env = {
        **os.environ,
        **s3_service.client_env(),
        "PREFERENCE_BUCKET": store.bucket,
        "PREFERENCE_SPARK_MASTER": "local[2]",
    }

    first = subprocess.Popen(command, cwd=PROJECT_ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 300
        while _checkpointed_epoch(store, prefix) < 1:
            assert first.poll() is None, "training ended before it could be interrupted"
            assert time.monotonic() < deadline, "no checkpoint of epoch 1 within 300 s"
            time.sleep(0.2)
        worker = json.loads(store.get_bytes(f"{job.run_prefix}/workers/1.json"))
        os.kill(worker["pid"], signal.SIGKILL)
        _, stderr = first.communicate(timeout=300)
    finally:
        if first.poll() is None:
            first.kill()
    assert first.returncode != 0, "killing a worker must fail the attempt"
    interrupted_at = _checkpointed_epoch(store, prefix)
    assert 1 <= interrupted_at < EPOCHS

    # The retry's workers start with empty folders of their own: they resume from the stored checkpoint.
    output = tmp_path / "results.json"
    retry = subprocess.run(
        [*command, "--output", str(output)], cwd=PROJECT_ROOT, env=env, capture_output=True, timeout=600
    )
    assert retry.returncode == 0, retry.stderr.decode()[-3000:]
    results = json.loads(output.read_text())
    assert [r["resumed_from_epoch"] for r in results] == [interrupted_at, interrupted_at]
    assert [[e["epoch"] for e in r["epochs"]] for r in results] == [list(range(interrupted_at + 1, EPOCHS + 1))] * 2
    assert results[0]["weights_sha256"] == results[1]["weights_sha256"]
    assert _checkpointed_epoch(store, prefix) == EPOCHS
