"""TFRecord (GZIP) write vs Parquet write of the same training examples, both from Spark.

    .venv/bin/python bench/bench_tfrecord_write.py [--rows 400000] [--files 2]

Builds a cached Spark DataFrame of ``--rows`` examples with every spec column, then writes it
with the pipeline's two writers, which partition and order rows the same way:

* Parquet: Spark's own writer (``SparkLake.write_table``: zstd, through S3A);
* TFRecord: ``write_tfrecords`` (Arrow batches to Python, Example encoding, framing, gzip, streamed
  from each executor to S3).

Both write to a throwaway SeaweedFS started here.

Each is run three times; the median is reported with rows/s and the ratio (goal: at most 1.5x).
"""

from __future__ import annotations

import datetime as dt
import statistics
import tempfile
import time
from pathlib import Path

import harness
from lake import running_lake

from include.preference.features import spec
from include.preference.features.examples import shuffled_order, write_tfrecords
from include.preference.spark import spark_session
from include.preference.storage import PartitionRef
from include.preference.storage.spark_lake import spark_lake


def main() -> None:
    parser = harness.parser(__doc__)
    parser.add_argument("--rows", type=int, default=400_000)
    parser.add_argument("--files", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    args = harness.pick(parser.parse_args(), rows=2_000, repeats=1)

    import sys

    sys.path.insert(0, str(Path(__file__).parent))
    from bench_input_pipeline import example_rows

    table = example_rows(args.rows, seed=4)
    timings: dict[str, list[float]] = {"parquet": [], "tfrecord": []}
    sizes: dict[str, int] = {}
    with (
        tempfile.TemporaryDirectory() as folder,
        running_lake(Path(folder)) as (_, store),
        spark_lake(store, "bench-tfrecord") as lake,
    ):
        spark = lake.ready(spark_session("bench_tfrecord_write", s3=store.settings))
        order = shuffled_order(17)  # column expressions need the session
        frame = spark.createDataFrame(table.to_pandas()).cache()
        assert frame.count() == args.rows
        for attempt in range(args.repeats + 1):  # the first round warms up Python workers and the JIT
            ref = PartitionRef("training", f"attempt-{attempt}", dt.date(2025, 1, 1))
            start = time.perf_counter()
            lake.write_table(frame, ref, spec.KEYS, sub="parquet", files=args.files, order=order)
            parquet = time.perf_counter() - start
            start = time.perf_counter()
            shards = write_tfrecords(frame, lake, ref, args.files, order)
            tfrecord = time.perf_counter() - start
            assert sum(shards.values()) == args.rows
            if attempt:
                timings["parquet"].append(parquet)
                timings["tfrecord"].append(tfrecord)
            if attempt == 1:
                sizes = {kind: sum(o.size for o in lake.written(ref, kind)) for kind in ("parquet", "tfrecord")}
    median = {kind: statistics.median(values) for kind, values in timings.items()}
    print(f"{args.rows:,} examples x {len(spec.example_columns())} columns, {args.files} files, Spark local, S3A")
    for kind in ("parquet", "tfrecord"):
        print(f"{kind:9s} {median[kind]:6.2f}s  {args.rows / median[kind]:10,.0f} rows/s  {sizes[kind] / 1e6:7.1f} MB")
    ratio = median["tfrecord"] / median["parquet"]
    print(f"tfrecord / parquet write time: {ratio:.2f}x  (goal: at most 1.5x)")
    harness.record(
        "bench_tfrecord_write",
        args,
        title="training examples written from Spark to S3: TFRecord (GZIP, from each executor) / Parquet",
        result=f"{ratio:.2f}x ({args.rows / median['tfrecord']:,.0f} vs {args.rows / median['parquet']:,.0f} rows/s; "
        f"{args.rows:,} examples)",
        ratios={"tfrecord / parquet": ratio},
        goal="at most 1.5x",
        met=ratio <= 1.5,
        seconds=median,
        sizes={"rows": args.rows, "files": args.files, **{f"{k}_bytes": v for k, v in sizes.items()}},
    )


if __name__ == "__main__":
    main()
