"""TFRecord (GZIP) write vs Parquet write of the same training examples, both from Spark.

    .venv/bin/python bench/bench_tfrecord_write.py [--rows 400000] [--files 2]

Builds a cached Spark DataFrame of ``--rows`` examples with every spec column, then writes it
with the pipeline's two writers, which partition and order rows the same way:

* Parquet: Spark's own writer (``write_table``: zstd);
* TFRecord: ``write_tfrecords`` (Arrow batches to Python, Example encoding, framing, gzip).

Each is run three times; the median is reported with rows/s and the ratio (goal: at most 1.5x).
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

from include.preference.features import spec
from include.preference.features.build import write_table
from include.preference.features.examples import shuffled_order, write_tfrecords
from include.preference.spark import spark_session


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=400_000)
    parser.add_argument("--files", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    import sys

    sys.path.insert(0, str(Path(__file__).parent))
    from bench_input_pipeline import example_rows

    spark = spark_session("bench_tfrecord_write")
    table = example_rows(args.rows, seed=4)
    frame = spark.createDataFrame(table.to_pandas()).cache()
    assert frame.count() == args.rows
    order = shuffled_order(17)
    timings: dict[str, list[float]] = {"parquet": [], "tfrecord": []}
    with tempfile.TemporaryDirectory() as folder:
        for attempt in range(args.repeats + 1):  # the first round warms up Python workers and the JIT
            start = time.perf_counter()
            write_table(frame, Path(folder) / f"parquet-{attempt}", spec.KEYS, files=args.files, order=order)
            parquet = time.perf_counter() - start
            start = time.perf_counter()
            shards = write_tfrecords(frame, Path(folder) / f"tfrecord-{attempt}", args.files, order)
            tfrecord = time.perf_counter() - start
            assert sum(shards.values()) == args.rows
            if attempt:
                timings["parquet"].append(parquet)
                timings["tfrecord"].append(tfrecord)
        sizes = {
            kind: sum(p.stat().st_size for p in Path(folder).glob(f"{kind}-1/*") if p.is_file())
            for kind in ("parquet", "tfrecord")
        }
    median = {kind: statistics.median(values) for kind, values in timings.items()}
    print(f"{args.rows:,} examples x {len(spec.example_columns())} columns, {args.files} files, Spark local")
    for kind in ("parquet", "tfrecord"):
        print(f"{kind:9s} {median[kind]:6.2f}s  {args.rows / median[kind]:10,.0f} rows/s  {sizes[kind] / 1e6:7.1f} MB")
    print(f"tfrecord / parquet write time: {median['tfrecord'] / median['parquet']:.2f}x  (goal: at most 1.5x)")
    spark.stop()


if __name__ == "__main__":
    main()
