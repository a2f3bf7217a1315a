"""tf.data input throughput vs the model's training-step throughput (goal: input at least 3x).

    .venv/bin/python bench/bench_input_pipeline.py [--rows 200000] [--batch 1024] [--shards 4]

Writes ``--rows`` training examples (every spec column, realistic value shapes) as GZIP TFRecord
shards with the pipeline's writer, then measures in one run:

* input: examples/s of ``training_dataset`` (read, decompress, parse, unpack, batch) with no model,
  consumed inside the graph as ``model.fit`` consumes it: the first epoch, and a later epoch when
  parsed batches are cached (how training runs, since examples fit in memory);
* training: examples/s of ``model.fit`` on the same batches already in memory (the model's own
  speed, input cost excluded).

The ratio input / training says how much headroom the input pipeline leaves the model.
"""

from __future__ import annotations

import datetime as dt
import os
import tempfile
import time
from pathlib import Path

import harness
import numpy as np
import pyarrow as pa

from include.preference.features import spec
from include.preference.features.tfrecord import write_records


def example_rows(count: int, seed: int = 0) -> pa.Table:
    """Rows shaped like real examples: small counts, day gaps, rates, a few category values."""
    rng = np.random.default_rng(seed)
    columns: dict[str, pa.Array] = {
        "customer_id": pa.array([f"C{i:07d}" for i in rng.integers(0, count // 5 + 1, count)]),
        "product_id": pa.array([f"P{i:06d}" for i in rng.integers(0, 5000, count)]),
        "anchor_date": pa.array([dt.date(2025, 6, 1)] * count, pa.date32()),
        spec.LABEL: pa.array((rng.random(count) < 0.2).astype("float32")),
    }
    for feature in spec.FEATURES:
        if feature.kind == "categorical":
            columns[feature.name] = pa.array([f"{feature.name}-{v}" for v in rng.integers(0, 12, count)])
        elif feature.transform == "log1p":
            columns[feature.name] = pa.array(rng.poisson(3.0, count).astype("float32"))
        else:
            columns[feature.name] = pa.array(rng.random(count).astype("float32"))
    return pa.table(columns)


def main() -> None:
    parser = harness.parser(__doc__)
    parser.add_argument("--rows", type=int, default=200_000)
    parser.add_argument("--batch", type=int, default=1024)
    parser.add_argument("--shards", type=int, default=4)
    args = harness.pick(parser.parse_args(), rows=2_048, batch=256, shards=2)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import tensorflow as tf

    from include.preference.model import build_model, feature_statistics
    from include.preference.training.data import training_dataset

    table = example_rows(args.rows)
    with tempfile.TemporaryDirectory() as folder:
        files = []
        per_shard = -(-args.rows // args.shards)
        for index in range(args.shards):
            path = Path(folder) / f"part-{index:05d}.tfrecord.gz"
            write_records(path, [table.slice(index * per_shard, per_shard)])
            files.append(str(path))

        def consume(dataset) -> float:
            """Examples/s of a full pass, consumed inside the graph as model.fit consumes it."""
            start = time.perf_counter()
            seen = int(
                dataset.reduce(tf.constant(0, tf.int64), lambda n, batch: n + tf.shape(batch[1], out_type=tf.int64)[0])
            )
            assert seen == args.rows, seen
            return seen / (time.perf_counter() - start)

        training_dataset(files, args.batch).take(2).reduce(0, lambda n, _: n + 1)  # trace outside the timing
        cold_rate = consume(training_dataset(files, args.batch))
        cached = training_dataset(files, args.batch, cache=True)
        consume(cached)  # the first epoch fills the cache
        cached_rate = consume(cached)

        in_memory = training_dataset(files, args.batch, shuffle=False, cache=True)
        consume(in_memory)
        stats = feature_statistics(
            {f.name: table.column(f.name).to_numpy() for f in spec.FEATURES if f.kind == "numeric"}
        )
        model = build_model(stats)
        model.fit(in_memory.take(5), epochs=1, verbose=0)  # trace the train step outside the timing
        start = time.perf_counter()
        model.fit(in_memory, epochs=1, verbose=0)
        train_rate = args.rows / (time.perf_counter() - start)

    print(f"{args.rows:,} examples in {args.shards} GZIP shards, batch {args.batch}, {os.cpu_count()} CPUs")
    print(f"input, first epoch  {cold_rate:12,.0f} examples/s  (read + gunzip + parse + batch)")
    print(f"input, later epochs {cached_rate:12,.0f} examples/s  (parsed batches cached in memory)")
    print(f"training step       {train_rate:12,.0f} examples/s  (model.fit on in-memory batches)")
    print(f"input / training, first epoch:  {cold_rate / train_rate:.2f}x")
    print(f"input / training, later epochs: {cached_rate / train_rate:.2f}x  (goal: at least 3x)")
    ratios = {
        "input / training, first epoch": cold_rate / train_rate,
        "input / training, later epochs": cached_rate / train_rate,
    }
    harness.record(
        "bench_input_pipeline",
        args,
        title="tf.data input (read, gunzip, parse, batch) / the model's training step, in examples per second",
        result=f"{ratios['input / training, first epoch']:.1f}x on the first epoch, "
        f"{ratios['input / training, later epochs']:.1f}x on later ones (parsed batches cached); "
        f"training {train_rate:,.0f} examples/s",
        ratios=ratios,
        goal="at least 3x on later epochs",
        met=ratios["input / training, later epochs"] >= 3,
        sizes={
            "rows": args.rows,
            "batch": args.batch,
            "shards": args.shards,
            "examples_per_second": {"input_first": cold_rate, "input_later": cached_rate, "training": train_rate},
        },
    )


if __name__ == "__main__":
    main()
