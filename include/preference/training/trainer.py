"""Training with tf.distribute: one loop for one process or many workers, resumable from checkpoints.

The loop is a custom one (``strategy.run`` over distributed batches, gradients all-reduced by the
optimizer) rather than ``model.fit``: under MultiWorkerMirroredStrategy Keras' ``fit`` cannot take
the model's dict inputs nor reduce its scalar metrics. Model and optimizer are created inside
``strategy.scope()``, so their variables are mirrored and every update is synchronised; workers
that trained apart would end with different weights, which the tests check cannot happen.

Each epoch is a fixed number of steps (from the shards' row counts) over a stream that restarts
with the epoch's own seed, so every worker runs the same steps and a resumed run sees the same
batches as an uninterrupted one. After every epoch all workers write a checkpoint (collectives may
be involved); only the chief's copy is kept and pushed to storage, from where a retried task
resumes. At the end the chief writes the trained model as a plain (undistributed) Keras model.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import socket
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from include.preference.model import ModelConfig, build_model
from include.preference.training.data import shards_to_read, training_dataset

if TYPE_CHECKING:
    from include.preference.storage import ObjectStore

log = logging.getLogger(__name__)

CHECKPOINT_INDEX = "checkpoint"  # TensorFlow's file naming the latest checkpoint
# What the loop can train: the preference model (loss: cross-entropy of the propensity against the
# label) and the customer profile autoencoder (loss: its own reconstruction error; labels unused).
MODEL_KINDS = ("preference", "profile")


def build_kind(kind: str, stats: Mapping[str, tuple[float, float]], config: ModelConfig | None) -> Any:
    """The compiled model of ``kind`` (see ``MODEL_KINDS``)."""
    if kind == "profile":
        from include.preference.profiles import build_profile_model

        return build_profile_model(stats, config)
    if kind == "preference":
        return build_model(stats, config)
    raise ValueError(f"unknown model kind {kind!r}; expected one of {', '.join(MODEL_KINDS)}")


@dataclass(frozen=True)
class TrainSettings:
    """How long and how to train (model sizes live in :class:`ModelConfig`)."""

    epochs: int = 4
    global_batch_size: int = 512
    seed: int = 7
    max_steps_per_epoch: int | None = None

    def steps_per_epoch(self, rows: int) -> int:
        steps = max(1, rows // self.global_batch_size)
        return min(steps, self.max_steps_per_epoch) if self.max_steps_per_epoch else steps


@dataclass
class TrainResult:
    """What one worker saw: the epochs it ran in this attempt and a digest of its final weights."""

    task_type: str
    task_index: int
    workers: int
    resumed_from_epoch: int
    epochs: list[dict[str, float]] = field(default_factory=list)
    weights_sha256: str = ""
    model_path: str | None = None

    @property
    def is_chief(self) -> bool:
        return self.task_index == 0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class CheckpointSync:
    """Keeps a local checkpoint directory in step with a prefix in object storage (or nothing).

    TensorFlow's ``checkpoint`` file names the latest checkpoint; it is uploaded after the files it
    names and older checkpoints are deleted after it, so storage always holds a complete one.
    """

    def __init__(self, store: "ObjectStore | None" = None, prefix: str = "") -> None:
        self.store = store
        self.prefix = prefix.rstrip("/")

    def pull(self, local: Path) -> bool:
        """Download the stored checkpoint, if any, into ``local`` (replacing it). True if one was found."""
        if self.store is None:
            return False
        keys = list(self.store.list_keys(self.prefix + "/"))
        if f"{self.prefix}/{CHECKPOINT_INDEX}" not in keys:
            return False
        shutil.rmtree(local, ignore_errors=True)
        for key in keys:
            self.store.get_file(key, local / key[len(self.prefix) + 1 :])
        return True

    def push(self, local: Path) -> None:
        """Upload the checkpoint files, the index last, then delete the stored files it replaced."""
        if self.store is None:
            return
        files = sorted(p for p in local.rglob("*") if p.is_file())
        ordered = [p for p in files if p.name != CHECKPOINT_INDEX] + [p for p in files if p.name == CHECKPOINT_INDEX]
        wanted = {f"{self.prefix}/{p.relative_to(local).as_posix()}" for p in ordered}
        for path in ordered:
            self.store.put_file(f"{self.prefix}/{path.relative_to(local).as_posix()}", path)
        stale = sorted(set(self.store.list_keys(self.prefix + "/")) - wanted)
        if stale:
            self.store.delete_keys(stale)


class WorkerStatus:
    """Each worker's host, PID, state and progress, for operators: ``<prefix>/<index>.json`` in
    object storage when there is one (workers on other hosts), else ``<work_dir>/workers/<index>.json``."""

    def __init__(self, work_dir: Path, index: int, store: "ObjectStore | None" = None, prefix: str = "") -> None:
        self.path = work_dir / "workers" / f"{index}.json"
        self.store = store if prefix else None
        self.key = f"{prefix.rstrip('/')}/{index}.json"
        self.fields: dict[str, Any] = {"index": index, "pid": os.getpid(), "host": socket.gethostname()}

    def update(self, **fields: Any) -> None:
        self.fields.update(fields, updated=time.time())
        body = json.dumps(self.fields)
        if self.store is not None:
            self.store.put_bytes(self.key, body.encode(), content_type="application/json")
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        partial = self.path.with_suffix(".tmp")
        partial.write_text(body)
        partial.replace(self.path)


def cluster_from_env() -> tuple[str, int, int]:
    """(task type, index, number of workers) from ``TF_CONFIG``; a lone chief when unset."""
    raw = os.environ.get("TF_CONFIG")
    if not raw:
        return "chief", 0, 1
    config = json.loads(raw)
    workers = sum(len(v) for k, v in config.get("cluster", {}).items() if k in ("chief", "worker"))
    task = config.get("task", {})
    return str(task.get("type", "worker")), int(task.get("index", 0)), max(1, workers)


def _profile_inputs() -> list[str]:
    from include.preference.profiles import PROFILE_FEATURES

    return list(PROFILE_FEATURES)


def default_strategy() -> Any:
    """MultiWorkerMirroredStrategy under ``TF_CONFIG``, else MirroredStrategy over visible GPUs (or CPU)."""
    import tensorflow as tf

    if os.environ.get("TF_CONFIG"):
        return tf.distribute.MultiWorkerMirroredStrategy()
    gpus = tf.config.list_logical_devices("GPU")
    if gpus:
        return tf.distribute.MirroredStrategy([d.name for d in gpus])
    return tf.distribute.get_strategy()  # the default strategy: one CPU replica


def weights_digest(weights: Sequence[Any]) -> str:
    digest = hashlib.sha256()
    for array in weights:
        digest.update(memoryview(array.astype(array.dtype.newbyteorder("<"), copy=False)).tobytes())
    return digest.hexdigest()


def train(
    files: Sequence[str],
    rows: int,
    stats: Mapping[str, tuple[float, float]],
    work_dir: Path,
    *,
    settings: TrainSettings | None = None,
    model_config: ModelConfig | None = None,
    checkpoints: CheckpointSync | None = None,
    strategy: Any = None,
    status: WorkerStatus | None = None,
    model_kind: str = "preference",
) -> TrainResult:
    """Train on GZIP TFRecord shards holding ``rows`` examples; resume from the latest checkpoint.

    ``model_kind``: ``preference`` (the ranking model) or ``profile`` (the customer autoencoder,
    trained on the same examples' customer features).

    Returns this worker's result; the chief (index 0) also writes ``work_dir/model.keras``.
    """
    import keras
    import tensorflow as tf

    settings = settings or TrainSettings()
    checkpoints = checkpoints or CheckpointSync()
    strategy = strategy or default_strategy()
    task_type, task_index, workers = cluster_from_env()
    chief = task_index == 0
    work_dir.mkdir(parents=True, exist_ok=True)
    status = status or WorkerStatus(work_dir, task_index)
    status.update(state="starting")
    keras.utils.set_random_seed(settings.seed)
    chief_dir = work_dir / "checkpoint"
    # Every worker restores the same checkpoint; non-chief workers write their (discarded) copies
    # elsewhere. Without storage, workers share the chief's directory (one machine).
    checkpoint_dir = chief_dir if chief else work_dir / f"checkpoint-worker-{task_index}"
    if not checkpoints.pull(checkpoint_dir) and not chief and chief_dir.exists():
        shutil.rmtree(checkpoint_dir, ignore_errors=True)
        shutil.copytree(chief_dir, checkpoint_dir)

    with strategy.scope():
        model = build_kind(model_kind, stats, model_config)
        optimizer = model.optimizer
        epoch_counter = tf.Variable(0, dtype=tf.int64, trainable=False, name="epochs_done")
    checkpoint = tf.train.Checkpoint(model=model, optimizer=optimizer, epochs_done=epoch_counter)
    manager = tf.train.CheckpointManager(checkpoint, str(checkpoint_dir), max_to_keep=1)
    if manager.latest_checkpoint:
        checkpoint.restore(manager.latest_checkpoint).expect_partial()
    resumed = int(epoch_counter.numpy())
    if resumed:
        log.info("worker %d resumed from %s (epoch %d)", task_index, manager.latest_checkpoint, resumed)
    result = TrainResult(task_type, task_index, workers, resumed)
    status.update(state="training", epochs_done=resumed, resumed_from_epoch=resumed)

    global_batch = settings.global_batch_size
    steps = settings.steps_per_epoch(rows)
    loss_fn = tf.keras.losses.BinaryCrossentropy(reduction="none")
    input_names = _profile_inputs() if model_kind == "profile" else None

    def per_example_loss(features: Any, label: Any) -> Any:
        if input_names is not None:  # the autoencoder: its output is each row's reconstruction error
            return tf.reshape(model({name: features[name] for name in input_names}, training=True), (-1,))
        return loss_fn(tf.reshape(label, (-1, 1)), model(features, training=True))

    def dataset_for(epoch: int) -> Any:
        def make(context: tf.distribute.InputContext) -> Any:
            batch = context.get_per_replica_batch_size(global_batch)
            shard = shards_to_read(files, context.input_pipeline_id, context.num_input_pipelines)
            by_file = len(files) >= context.num_input_pipelines
            dataset = training_dataset(shard, batch, shuffle=True, seed=settings.seed + epoch, repeat=True)
            if not by_file:  # fewer files than workers: every worker reads all, keeps its batches
                dataset = dataset.shard(context.num_input_pipelines, context.input_pipeline_id)
            return dataset

        return strategy.distribute_datasets_from_function(make)

    def replica_step(features: Any, label: Any) -> Any:
        with tf.GradientTape() as tape:
            per_example = per_example_loss(features, label)
            loss = tf.nn.compute_average_loss(per_example, global_batch_size=global_batch)
        gradients = tape.gradient(loss, model.trainable_variables)
        optimizer.apply_gradients(zip(gradients, model.trainable_variables, strict=True))
        return loss

    @tf.function
    def run_epoch(iterator: Any) -> Any:
        total = tf.constant(0.0)
        for _ in tf.range(steps):
            features, label = next(iterator)
            per_replica = strategy.run(replica_step, args=(features, label))
            total += strategy.reduce(tf.distribute.ReduceOp.SUM, per_replica, axis=None)
        return total / tf.cast(steps, tf.float32)

    for epoch in range(resumed, settings.epochs):
        started = time.perf_counter()
        iterator = iter(dataset_for(epoch))
        loss = float(run_epoch(iterator))
        seconds = time.perf_counter() - started
        epoch_counter.assign(epoch + 1)
        manager.save(checkpoint_number=epoch + 1)
        metrics = {
            "epoch": float(epoch + 1),
            "loss": loss,
            "seconds": seconds,
            "examples_per_second": steps * global_batch / seconds,
        }
        result.epochs.append(metrics)
        if chief:
            checkpoints.push(checkpoint_dir)
        status.update(state="training", epochs_done=epoch + 1, last_epoch=metrics)
        log.info(
            "worker %d epoch %d/%d: loss %.4f, %.0f examples/s",
            task_index,
            epoch + 1,
            settings.epochs,
            loss,
            metrics["examples_per_second"],
        )

    weights = model.get_weights()
    result.weights_sha256 = weights_digest(weights)
    if chief:
        plain = build_kind(model_kind, stats, model_config)  # outside the strategy: a model anyone can load
        plain.set_weights(weights)
        path = work_dir / "model.keras"
        plain.save(path)
        result.model_path = str(path)
    else:
        shutil.rmtree(checkpoint_dir, ignore_errors=True)
    status.update(state="done", weights_sha256=result.weights_sha256)
    return result
