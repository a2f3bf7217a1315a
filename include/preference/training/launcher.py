"""Launch training: in this process, or as N TensorFlow workers in a Spark barrier stage.

A barrier stage starts all its tasks together (or none) and lets them exchange messages: each task
picks a free port, ``allGather`` gives every task the full list of ``host:port`` addresses, and
each builds the same ``TF_CONFIG`` with its own index. MultiWorkerMirroredStrategy then connects
the workers. ``local[N]`` runs N workers on one machine; on a cluster each task asks Spark for a GPU
(``spark.task.resource.gpu.amount=1``) and sees only the GPU Spark gave it.

Python workers must not be reused across tasks (``spark.python.worker.reuse=false``, set by
:func:`include.preference.spark.spark_session`): TensorFlow's cluster can be set up only once per
process.

The workers share nothing but object storage: a job names its TFRecord shards by their keys in the
lake, each worker fetches the shards it reads into a temporary folder of its own, checkpoints and
worker progress go under the job's ``run_prefix`` (``checkpoint/``, ``workers/<index>.json``), and
the chief uploads the trained model to ``<run_prefix>/model/model.keras``, where the driver and the
registration read it. Without storage (``s3`` unset) a job runs on one host from local files into
its ``work_dir``.
"""

from __future__ import annotations

import json
import os
import socket
import tempfile
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

from include.preference.model import ModelConfig
from include.preference.training.data import shards_to_read
from include.preference.training.trainer import CheckpointSync, TrainResult, TrainSettings, train

if TYPE_CHECKING:
    from pyspark.sql import SparkSession

    from include.preference.config import S3Settings


@dataclass(frozen=True)
class TrainJob:
    """Everything a worker needs, picklable: data, statistics, settings, where to keep its state.

    ``files``: the shards' keys in the lake bucket (``s3`` set), or local paths (one host).
    ``run_prefix``: where checkpoints, worker status and the model go in the bucket.
    ``work_dir``: the local folder of a job without storage (each worker uses a temporary one otherwise).
    ``model_kind``: ``preference`` or ``profile`` (see :data:`include.preference.training.trainer.MODEL_KINDS`).
    """

    files: tuple[str, ...]
    rows: int
    stats: dict[str, tuple[float, float]]
    work_dir: str = ""
    settings: TrainSettings = field(default_factory=TrainSettings)
    model_config: ModelConfig = field(default_factory=ModelConfig)
    s3: "S3Settings | None" = None
    run_prefix: str = ""
    worker_host: str | None = None
    model_kind: str = "preference"

    def __post_init__(self) -> None:
        if self.s3 is None and not self.work_dir:
            raise ValueError("a training job without object storage needs a work_dir")

    @property
    def model_key(self) -> str:
        return f"{self.run_prefix}/model/model.keras"


def job_to_json(job: TrainJob) -> str:
    """The job as JSON, without credentials (a worker reads those from its environment)."""
    body = asdict(job)
    body.pop("s3")
    return json.dumps(body, indent=1, sort_keys=True)


def job_from_json(text: str, s3: "S3Settings | None" = None) -> TrainJob:
    body = json.loads(text)
    return TrainJob(
        files=tuple(body["files"]),
        rows=int(body["rows"]),
        stats={name: (float(m), float(v)) for name, (m, v) in body["stats"].items()},
        work_dir=body.get("work_dir", ""),
        settings=TrainSettings(**body["settings"]),
        model_config=ModelConfig(**body["model_config"]),
        s3=s3,
        run_prefix=body.get("run_prefix", ""),
        worker_host=body.get("worker_host"),
        model_kind=body.get("model_kind", "preference"),
    )


def run_job(job: TrainJob, strategy: Any = None) -> TrainResult:
    """Run the job in this process (under ``TF_CONFIG`` when set: one worker of a cluster)."""
    if job.s3 is None:
        return train(
            job.files,
            job.rows,
            job.stats,
            Path(job.work_dir),
            settings=job.settings,
            model_config=job.model_config,
            strategy=strategy,
            model_kind=job.model_kind,
        )
    from include.preference.storage import ObjectStore
    from include.preference.training.trainer import WorkerStatus, cluster_from_env

    store = ObjectStore(job.s3)
    _, index, workers = cluster_from_env()
    with tempfile.TemporaryDirectory(prefix="preference-train-") as scratch:
        work = Path(scratch)
        # Every shard keeps its place in the list (the trainer splits the list the same way on
        # every worker); only the ones this worker reads are fetched.
        local = [str(work / "data" / f"{i:05d}-{Path(key).name}") for i, key in enumerate(job.files)]
        mine = shards_to_read(list(range(len(job.files))), index, workers)
        for i in mine:
            store.get_file(job.files[i], Path(local[i]))
        prefix = job.run_prefix
        result = train(
            local,
            job.rows,
            job.stats,
            work,
            settings=job.settings,
            model_config=job.model_config,
            checkpoints=CheckpointSync(store, f"{prefix}/checkpoint") if prefix else CheckpointSync(),
            strategy=strategy,
            status=WorkerStatus(work, index, store, f"{prefix}/workers" if prefix else ""),
            model_kind=job.model_kind,
        )
        if result.model_path is not None:
            if not prefix:
                raise ValueError("a training job with object storage needs a run_prefix for its model")
            store.put_file(job.model_key, Path(result.model_path))
            result.model_path = store.uri(job.model_key)
    return result


def _free_port(host: str) -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind((host, 0))
        return int(probe.getsockname()[1])


def _barrier_worker(job: TrainJob, _rows: Iterator[Any]) -> Iterator[str]:
    from pyspark import BarrierTaskContext

    context = BarrierTaskContext.get()
    index = context.partitionId()
    host = job.worker_host or context.getTaskInfos()[index].address.rsplit(":", 1)[0]
    addresses = context.allGather(f"{host}:{_free_port(host)}")
    gpus = context.resources().get("gpu")
    if gpus is not None:
        os.environ["CUDA_VISIBLE_DEVICES"] = ",".join(gpus.addresses)
    os.environ["TF_CONFIG"] = json.dumps(
        {"cluster": {"worker": list(addresses)}, "task": {"type": "worker", "index": index}}
    )
    result = run_job(job)
    context.barrier()  # nobody leaves while another worker may still need a collective
    yield json.dumps(result.to_dict())


def train_on_spark(spark: "SparkSession", job: TrainJob, workers: int) -> list[dict[str, Any]]:
    """Train with ``workers`` TensorFlow workers in one Spark barrier stage; their results by index."""
    context = spark.sparkContext
    if workers < 1:
        raise ValueError(f"workers must be at least 1, got {workers}")
    if context.getConf().get("spark.python.worker.reuse", "true").lower() != "false":
        raise RuntimeError(
            "distributed training needs spark.python.worker.reuse=false (TensorFlow sets up once per process)"
        )
    if context.defaultParallelism < workers:
        raise RuntimeError(
            f"a barrier stage of {workers} workers needs {workers} free task slots; "
            f"Spark has {context.defaultParallelism}"
        )
    rdd = context.parallelize(range(workers), workers)
    results = [json.loads(line) for line in rdd.barrier().mapPartitions(partial(_barrier_worker, job)).collect()]
    return sorted(results, key=lambda r: r["task_index"])


def main(argv: list[str] | None = None) -> int:
    """``python -m include.preference.training.launcher JOB.json --workers N``: train, print results.

    One worker runs in this process; more run as a Spark barrier stage. A job with a ``run_prefix``
    reads its shards from, and keeps its state in, the bucket configured by the environment.
    """
    import argparse

    parser = argparse.ArgumentParser(prog="python -m include.preference.training.launcher")
    parser.add_argument("job", type=Path, help="the job, as written by job_to_json")
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--master", default=None, help="Spark master (default: PREFERENCE_SPARK_MASTER or local[*])")
    parser.add_argument("--output", type=Path, default=None, help="write the workers' results here as JSON")
    args = parser.parse_args(argv)

    body = json.loads(args.job.read_text())
    s3 = None
    if body.get("run_prefix"):
        from include.preference.config import load_settings

        s3 = load_settings().s3
    job = job_from_json(args.job.read_text(), s3)
    if args.workers == 1:
        results = [run_job(job).to_dict()]
    else:
        from include.preference.spark import spark_session

        results = train_on_spark(spark_session("preference-training", args.master), job, args.workers)
    text = json.dumps(results, indent=1)
    if args.output:
        args.output.write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
