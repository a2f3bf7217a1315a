"""Daily L1 re-assignment of embeddings to the nearest centroid: naive Spark vs ours vs numpy.

    .venv/bin/python bench/bench_segments.py [--rows 1000000] [--dim 32] [--centroids 20]

All three read the same Parquet file of ``rows`` model embeddings (``array<float>``, ``dim`` wide)
and produce, for every row, its nearest centroid by L1 distance in the segment space (the
embedding's taste part scaled to unit length, :func:`include.preference.segments.assign.segment_space`;
the centroids live there):

* naive: ``crossJoin`` with the broadcast centroids, a Python UDF taking each (row, centroid) pair
  to the segment space and its L1 distance, ``row_number`` over a window per row to keep the nearest;
* ours: ``mapInArrow`` with the block-wise vectorized numpy kernel
  (:func:`include.preference.segments.jobs.assign_frame`), written to Parquet;
* numpy: one process, read the file with pyarrow, the same kernel, write Parquet.

Prints seconds and the ratios naive / ours (goal at least 40) and ours / numpy (goal at most 2).
The naive path runs on a slice (``--naive-rows``) and is scaled linearly: it is row-by-row work.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import harness
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq


def make_input(path: Path, rows: int, dim: int, seed: int = 0) -> None:
    rng = np.random.default_rng(seed)
    values = rng.normal(size=(rows, dim)).astype(np.float32)
    offsets = pa.array(np.arange(0, (rows + 1) * dim, dim, dtype=np.int32))
    table = pa.table(
        {
            "customer_id": pa.array([f"c{i:08d}" for i in range(rows)]),
            "embedding": pa.ListArray.from_arrays(offsets, pa.array(values.reshape(-1))),
        }
    )
    pq.write_table(table, path, row_group_size=128 * 1024)


def run_numpy(source: Path, target: Path, centroids: np.ndarray) -> float:
    from include.preference.segments.assign import nearest_l1, segment_space

    start = time.perf_counter()
    table = pq.read_table(source)
    flat = table.column("embedding").combine_chunks().flatten().to_numpy()
    index, distance = nearest_l1(segment_space(flat.reshape(table.num_rows, -1)), centroids)
    out = pa.table(
        {"customer_id": table.column("customer_id"), "cluster_id": index.astype(np.int64), "l1_distance": distance}
    )
    pq.write_table(out, target)
    return time.perf_counter() - start


def run_ours(spark, source: Path, target: Path, centroids: np.ndarray) -> float:
    from include.preference.segments.jobs import assign_frame

    start = time.perf_counter()
    frame = spark.read.parquet(str(source))
    ids = np.arange(len(centroids), dtype=np.int64)
    assign_frame(frame, centroids, ids, "customer_id", {}).write.mode("overwrite").parquet(str(target))
    return time.perf_counter() - start


def run_naive(spark, source: Path, target: Path, centroids: np.ndarray, rows: int) -> float:
    from pyspark.sql import Window
    from pyspark.sql import functions as F
    from pyspark.sql import types as T

    taste = len(centroids[0])

    @F.udf(T.DoubleType())
    def l1(a, b):
        part = a[:taste]
        norm = sum(x * x for x in part) ** 0.5 or 1.0
        return float(sum(abs(x / norm - y) for x, y in zip(part, b, strict=True)))

    start = time.perf_counter()
    frame = spark.read.parquet(str(source)).limit(rows)
    table = spark.createDataFrame(
        [(i, [float(v) for v in c]) for i, c in enumerate(centroids)], "cluster_id long, centroid array<float>"
    )
    pairs = frame.crossJoin(F.broadcast(table)).withColumn("l1_distance", l1("embedding", "centroid"))
    nearest = Window.partitionBy("customer_id").orderBy("l1_distance", "cluster_id")
    out = (
        pairs.withColumn("_n", F.row_number().over(nearest))
        .where("_n = 1")
        .select("customer_id", "cluster_id", "l1_distance")
    )
    out.write.mode("overwrite").parquet(str(target))
    return time.perf_counter() - start


def main() -> None:
    from include.preference.model import TASTE_DIM, ModelConfig
    from include.preference.segments.assign import segment_space
    from include.preference.spark import spark_session

    parser = harness.parser(__doc__)
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--dim", type=int, default=ModelConfig().embedding_dim, help="the model's embedding width")
    parser.add_argument("--centroids", type=int, default=20)
    parser.add_argument("--naive-rows", type=int, default=50_000)
    args = harness.pick(parser.parse_args(), rows=5_000, naive_rows=1_000)

    # Centroids are points of the segment space: unit-length tastes.
    centroids = segment_space(np.random.default_rng(1).normal(size=(args.centroids, TASTE_DIM)).astype(np.float32))
    spark = spark_session("bench-segments", reuse_workers=True)
    with tempfile.TemporaryDirectory(prefix="bench-segments-") as work:
        work_dir = Path(work)
        source = work_dir / "embeddings.parquet"
        make_input(source, args.rows, args.dim)
        run_ours(spark, source, work_dir / "warm", centroids)  # start the Python workers once
        numpy_seconds = min(run_numpy(source, work_dir / f"numpy{i}.parquet", centroids) for i in range(2))
        ours = min(run_ours(spark, source, work_dir / f"ours{i}", centroids) for i in range(2))
        naive_rows = min(args.naive_rows, args.rows)
        naive = run_naive(spark, source, work_dir / "naive", centroids, naive_rows) * args.rows / naive_rows
        check = pq.read_table(work_dir / "ours0").to_pandas().sort_values("customer_id")
        expected = pq.read_table(work_dir / "numpy0.parquet").to_pandas().sort_values("customer_id")
        assert (check["cluster_id"].to_numpy() == expected["cluster_id"].to_numpy()).all(), "ours and numpy disagree"
    print(f"{args.rows:,} x {args.dim} embeddings, {args.centroids} centroids, L1 over the {TASTE_DIM}-wide taste part")
    print(f"  naive (crossJoin + Python UDF + row_number): {naive:8.1f} s (from {naive_rows:,} rows, scaled)")
    print(f"  ours  (mapInArrow + vectorized numpy)      : {ours:8.1f} s")
    print(f"  numpy (one process)                        : {numpy_seconds:8.1f} s")
    print(f"naive / ours = {naive / ours:.1f}x (goal >= 40); ours / numpy = {ours / numpy_seconds:.2f}x (goal <= 2)")
    ratios = {"naive / ours": naive / ours, "ours / numpy": ours / numpy_seconds}
    harness.record(
        "bench_segments",
        args,
        title=f"L1 re-assignment, {args.rows:,} embeddings to {args.centroids} centroids in the segment space: "
        "naive Spark (crossJoin + Python UDF + row_number) / ours (mapInArrow + numpy); ours / numpy alone",
        result=f"{ratios['naive / ours']:.0f}x ({naive:.1f} s vs {ours:.1f} s); {ratios['ours / numpy']:.2f}x "
        f"(numpy {numpy_seconds:.1f} s)",
        ratios=ratios,
        goal="at least 40x; at most 2x",
        met=ratios["naive / ours"] >= 40 and ratios["ours / numpy"] <= 2,
        seconds={"naive": naive, "ours": ours, "numpy": numpy_seconds},
        sizes={"rows": args.rows, "dim": args.dim, "centroids": args.centroids, "naive_rows": naive_rows},
    )


if __name__ == "__main__":
    main()
