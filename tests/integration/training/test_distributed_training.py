"""Distributed training for real: two TensorFlow workers in a Spark barrier stage, and a worker
killed mid-training whose retried job resumes from the checkpoint in S3."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from include.preference.model import build_model, feature_statistics, load_model
from include.preference.training.launcher import TrainJob, job_to_json, train_on_spark
from include.preference.training.trainer import TrainSettings, weights_digest

pytestmark = [pytest.mark.integration, pytest.mark.slow]

PROJECT_ROOT = Path(__file__).resolve().parents[3]


def job_for(training_sets, work_dir: Path, **settings) -> TrainJob:
    frame = training_sets["frame"](training_sets["train"][0])
    stats = feature_statistics({c: frame[c].to_numpy() for c in frame.columns})
    return TrainJob(
        files=tuple(training_sets["files"]),
        rows=training_sets["rows"],
        stats=stats,
        work_dir=str(work_dir),
        settings=TrainSettings(**{"epochs": 2, "global_batch_size": 128, **settings}),
        worker_host="127.0.0.1",
    )


def test_two_workers_end_with_identical_weights(training_sets, spark, tmp_path):
    import keras

    job = job_for(training_sets, tmp_path / "train")
    results = train_on_spark(spark, job, workers=2)

    assert [r["task_index"] for r in results] == [0, 1]
    assert all(r["workers"] == 2 for r in results)
    assert [len(r["epochs"]) for r in results] == [2, 2]
    # Both saw the same (all-reduced) loss and ended with the same weights, bit for bit.
    assert results[0]["weights_sha256"] == results[1]["weights_sha256"]
    assert [e["loss"] for e in results[0]["epochs"]] == [e["loss"] for e in results[1]["epochs"]]
    # The chief's saved model holds those weights, and they moved away from the initial ones.
    saved = load_model(results[0]["model_path"])
    assert weights_digest([np.asarray(w) for w in saved.get_weights()]) == results[0]["weights_sha256"]
    keras.utils.set_random_seed(job.settings.seed)
    initial = build_model(job.stats, job.model_config)
    assert weights_digest([np.asarray(w) for w in initial.get_weights()]) != results[0]["weights_sha256"]
    assert results[1]["model_path"] is None


def _checkpointed_epoch(store, prefix: str) -> int:
    key = f"{prefix}/checkpoint"
    if not store.exists(key):
        return 0
    text = store.get_bytes(key).decode()
    return int(text.split('model_checkpoint_path: "ckpt-')[1].split('"')[0])


def test_a_killed_worker_is_resumed_from_the_checkpoint_in_storage(training_sets, lake_env, tmp_path):
    store = lake_env
    prefix = "checkpoints/test-run"
    job = replace(
        job_for(training_sets, tmp_path / "attempt-1", epochs=8, global_batch_size=32),
        checkpoint_prefix=prefix,
    )
    job_file = tmp_path / "job.json"
    job_file.write_text(job_to_json(job))
    command = [sys.executable, "-m", "include.preference.training.launcher", str(job_file), "--workers", "2"]
    env = {**os.environ, "PREFERENCE_SPARK_MASTER": "local[2]"}

    first = subprocess.Popen(command, cwd=PROJECT_ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 300
        while _checkpointed_epoch(store, prefix) < 2:
            assert first.poll() is None, "training ended before it could be interrupted"
            assert time.monotonic() < deadline, "no checkpoint of epoch 2 within 300 s"
            time.sleep(0.2)
        worker = json.loads((tmp_path / "attempt-1" / "workers" / "1.json").read_text())
        os.kill(worker["pid"], signal.SIGKILL)
        _, stderr = first.communicate(timeout=300)
    finally:
        if first.poll() is None:
            first.kill()
    assert first.returncode != 0, "killing a worker must fail the attempt"
    interrupted_at = _checkpointed_epoch(store, prefix)
    assert 2 <= interrupted_at < 8

    # The retry runs elsewhere (an empty work directory): it starts from the stored checkpoint.
    retry_job = replace(job, work_dir=str(tmp_path / "attempt-2"))
    job_file.write_text(job_to_json(retry_job))
    output = tmp_path / "results.json"
    retry = subprocess.run(
        [*command, "--output", str(output)], cwd=PROJECT_ROOT, env=env, capture_output=True, timeout=600
    )
    assert retry.returncode == 0, retry.stderr.decode()[-3000:]
    results = json.loads(output.read_text())
    assert [r["resumed_from_epoch"] for r in results] == [interrupted_at, interrupted_at]
    assert [[e["epoch"] for e in r["epochs"]] for r in results] == [list(range(interrupted_at + 1, 9))] * 2
    assert results[0]["weights_sha256"] == results[1]["weights_sha256"]
    assert _checkpointed_epoch(store, prefix) == 8
