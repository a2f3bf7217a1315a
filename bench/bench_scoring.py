"""Embedding scoring in Spark against a Spark pass over the same rows that does no work, and
``mapInArrow`` against ``mapInPandas``.

    .venv/bin/python bench/bench_scoring.py [--rows 500000]

Trains a small model on random features (its quality does not matter, its shape does: the
production architecture), writes ``rows`` customer feature rows to Parquet and times, each writing
Parquet of (customer_id, embedding):

* no-op: ``mapInArrow`` emitting a constant embedding (read, Arrow transfer, write; no model);
* scoring with ``mapInArrow`` (the pipeline's path: Arrow batches straight into Keras);
* scoring with ``mapInPandas`` (the same function behind pandas frames).

Prints seconds and the ratios scoring / no-op (goal at most 1.3) and pandas / arrow.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import harness
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from include.preference.features import spec


def make_features(path: Path, rows: int, seed: int = 0) -> None:
    rng = np.random.default_rng(seed)
    columns = {"customer_id": pa.array([f"c{i:08d}" for i in range(rows)])}
    for feature in spec.features_of("customer"):
        if feature.kind == "numeric":
            columns[feature.name] = pa.array(rng.gamma(1.0, 3.0, rows).astype(np.float32))
        else:
            columns[feature.name] = pa.array(rng.choice(["a", "b", "c", "unknown"], rows).tolist())
    pq.write_table(pa.table(columns), path, row_group_size=64 * 1024)


def make_model(work: Path) -> Path:
    from include.preference.model import build_model

    stats = {name: (1.0, 2.0) for name in spec.numeric_names()}
    model = build_model(stats)
    path = work / "model.keras"
    model.save(path)
    return path


def noop_batches(dim: int):
    def run(batches):
        for batch in batches:
            rows = batch.num_rows
            offsets = pa.array(np.arange(0, (rows + 1) * dim, dim, dtype=np.int32))
            values = pa.array(np.zeros(rows * dim, dtype=np.float32))
            yield pa.RecordBatch.from_pydict(
                {"customer_id": batch.column("customer_id"), "embedding": pa.ListArray.from_arrays(offsets, values)}
            )

    return run


def timed(action) -> float:
    start = time.perf_counter()
    action()
    return time.perf_counter() - start


def main() -> None:
    from include.preference.model import ModelConfig
    from include.preference.scoring.batch import embeddings
    from include.preference.scoring.handle import ModelHandle
    from include.preference.spark import spark_session

    parser = harness.parser(__doc__)
    parser.add_argument("--rows", type=int, default=500_000)
    parser.add_argument("--repeats", type=int, default=2)
    args = harness.pick(parser.parse_args(), rows=2_000, repeats=1)

    spark = spark_session("bench-scoring", reuse_workers=True)
    dim = ModelConfig().embedding_dim
    with tempfile.TemporaryDirectory(prefix="bench-scoring-") as work:
        work_dir = Path(work)
        source = work_dir / "customers.parquet"
        make_features(source, args.rows)
        handle = ModelHandle(uri=str(make_model(work_dir)), version="bench")
        columns = ["customer_id", *(f.name for f in spec.features_of("customer"))]
        frame = spark.read.parquet(str(source)).select(*columns)

        def noop(out: Path):
            frame.mapInArrow(noop_batches(dim), "customer_id string, embedding array<float>").write.mode(
                "overwrite"
            ).parquet(str(out))

        def score(out: Path, method: str):
            embeddings(frame, handle, "customer", {}, method).write.mode("overwrite").parquet(str(out))

        score(work_dir / "warm", "arrow")  # workers start and load the model once
        results = {"no-op": [], "arrow": [], "pandas": []}
        for i in range(args.repeats):
            results["no-op"].append(timed(lambda i=i: noop(work_dir / f"noop{i}")))
            results["arrow"].append(timed(lambda i=i: score(work_dir / f"arrow{i}", "arrow")))
            results["pandas"].append(timed(lambda i=i: score(work_dir / f"pandas{i}", "pandas")))
    best = {name: min(values) for name, values in results.items()}
    print(f"{args.rows:,} customer rows, embedding dim {dim}, Spark {spark.sparkContext.master}")
    for name, seconds in best.items():
        print(f"  {name:<7} {seconds:7.2f} s  ({args.rows / seconds:,.0f} rows/s)")
    print(
        f"scoring (mapInArrow) / no-op = {best['arrow'] / best['no-op']:.2f}x (goal <= 1.3); "
        f"mapInPandas / mapInArrow = {best['pandas'] / best['arrow']:.2f}x"
    )
    ratios = {
        "scoring / no-op": best["arrow"] / best["no-op"],
        "mapInPandas / mapInArrow": best["pandas"] / best["arrow"],
    }
    harness.record(
        "bench_scoring",
        args,
        title=f"embedding scoring of {args.rows:,} customers in Spark (mapInArrow) / a Spark pass over the same rows "
        "doing no work; mapInPandas / mapInArrow",
        result=f"{ratios['scoring / no-op']:.2f}x ({args.rows / best['arrow']:,.0f} rows/s); "
        f"{ratios['mapInPandas / mapInArrow']:.2f}x",
        ratios=ratios,
        goal="scoring at most 1.3x the no-op",
        met=ratios["scoring / no-op"] <= 1.3,
        seconds=best,
        sizes={"rows": args.rows, "embedding_dim": dim},
    )


if __name__ == "__main__":
    main()
