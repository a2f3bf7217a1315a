"""A history file through validation and a full feature build: our way vs day by day.

    .venv/bin/python bench/bench_history.py [--input ../shared/data/online_retail_dev.csv.gz]
        [--days 120] [--scale N] [--skip-per-day-validation]

The evaluation protocol (and a backfill's first full feature build) read a whole history:

* validation: the DAG's suites over ``--days`` days of the file, one suite run per month of days
  (``validate_stretch``, every row judged against its own day) vs one run per day
  (``validate_day``, what the daily DAG does), both in two processes; the validated rows must match;
* features: a full build as of the last day, reading every day's partitions in one scan
  (``read_days``) vs a union of one read per day; the built features must match.

Prints seconds and the ratio for each. ``--scale N`` writes the file N times over with distinct
customers first (as ``bench_evaluate.py --scale``).
"""

from __future__ import annotations

import datetime as dt
import multiprocessing
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from functools import reduce
from pathlib import Path

import harness
import pandas as pd
import pyarrow.parquet as pq
from bench_evaluate import scaled_copy
from lake import running_lake

from include.preference.evaluation.protocol import file_days, stage_validated
from include.preference.features import build
from include.preference.storage import PartitionRef
from include.preference.storage.spark_lake import SparkLake


def validate_alone(source: str, path: Path, day: dt.date, root: Path) -> int:
    """One day validated by itself, as the daily DAG does; validated rows written like the protocol."""
    from include.preference.sources import file_importer
    from include.preference.validation import validate_day

    raw, facts = file_importer(source)(path, day)
    result = validate_day(day, raw, None, closed_day=bool(facts.get("closed_day")))
    assert not result.blocking, result.summary()["blocking"]
    for name, outcome in result.tables.items():
        target = root / "validated" / name / f"dt={day.isoformat()}"
        target.mkdir(parents=True, exist_ok=True)
        pq.write_table(outcome.validated_table(), target / "part-00000.parquet")
    return sum(len(o.validated) for o in result.tables.values())


def union_of_reads(spark, lake, days: list[dt.date]) -> tuple:
    """The obvious way: read each day's partition and union them."""
    from pyspark.sql import functions as F

    def union(table: str, with_day: bool):
        frames = []
        for day in days:
            frame = lake.read(spark, PartitionRef("validated", table, day))
            frames.append(frame.withColumn(build.DAY, F.lit(day)) if with_day else frame)
        return reduce(lambda a, b: a.unionByName(b), frames)

    return union("events", False), union("orders", False), union("products", True)


def features_of(lake, day: dt.date) -> dict[str, pd.DataFrame]:
    out = {}
    for table in ("customers", "products", "state_pairs"):
        frame = lake.read_arrow(build.feature_ref(table, day)).to_pandas()
        out[table] = frame.sort_values(list(frame.columns[:2])).reset_index(drop=True)
    return out


def main() -> None:
    parser = harness.parser(__doc__)
    default_input = Path(__file__).resolve().parents[2] / "shared" / "data" / "online_retail_dev.csv.gz"
    parser.add_argument("--input", type=Path, default=default_input)
    parser.add_argument("--days", type=int, default=120)
    parser.add_argument("--scale", type=int, default=1)
    parser.add_argument("--skip-per-day-validation", action="store_true", help="reuse ours for both builds")
    parser.add_argument("--processes", type=int, default=2, help="validation processes (forked) for both ways")
    # Quick: in this process (no fork of a process already running Spark or TensorFlow).
    args = harness.pick(parser.parse_args(), days=2, processes=1)

    with tempfile.TemporaryDirectory(prefix="bench-history-") as work:
        source = args.input
        if args.scale > 1:
            source = Path(work) / "scaled.csv.gz"
            size = scaled_copy(args.input, args.scale, 135_080 / 541_909, source)
            print(f"scaled file: {size['lines']:,} lines, {size['customers']:,} customers")
        present = file_days("online_retail", source)
        days = [present[0] + dt.timedelta(days=i) for i in range(args.days)]
        alone_root = Path(work) / "alone"
        lake_context = running_lake(Path(work) / "lake")
        _, store = lake_context.__enter__()
        ours_root = SparkLake(store, "_work/bench-history/")

        start = time.perf_counter()
        counts = stage_validated("online_retail", source, days, ours_root, processes=args.processes)
        ours = time.perf_counter() - start
        rows = sum(c["rows_in"] for c in counts.values())
        print(f"validation, {len(days)} days ({rows:,} rows in): ours {ours:.1f}s")
        alone = None
        if not args.skip_per_day_validation:
            start = time.perf_counter()
            n = len(days)
            inputs = (["online_retail"] * n, [source] * n, days, [alone_root] * n)
            if args.processes > 1:
                with ProcessPoolExecutor(args.processes, mp_context=multiprocessing.get_context("fork")) as pool:
                    validated = sum(pool.map(validate_alone, *inputs))
            else:
                validated = sum(map(validate_alone, *inputs))
            alone = time.perf_counter() - start
            assert validated == sum(c["validated"] for c in counts.values()), "validated rows differ"
            print(f"validation day by day {alone:.1f}s: {alone / ours:.1f}x ours")

        from include.preference.spark import spark_session

        spark = spark_session("bench-history", s3=store.settings)
        last = days[-1]
        if not args.quick:  # a warm-up build (JIT, caches); quick measures nothing
            build.build_features(spark, ours_root, days[len(days) // 4], mode="full", keep_dailies=False)
        start = time.perf_counter()
        build.build_features(spark, ours_root, last, mode="full", keep_dailies=False)
        one_scan = time.perf_counter() - start
        expected = features_of(ours_root, last)

        original = build._day_inputs
        build._day_inputs = union_of_reads  # type: ignore[assignment]
        try:
            start = time.perf_counter()
            build.build_features(spark, ours_root, last, mode="full", keep_dailies=False)
            unions = time.perf_counter() - start
        finally:
            build._day_inputs = original  # type: ignore[assignment]
        for table, frame in features_of(ours_root, last).items():
            pd.testing.assert_frame_equal(frame, expected[table], obj=table)
        print(f"full feature build as of day {len(days)}: one scan {one_scan:.1f}s, union of per-day reads")
        print(f"  {unions:.1f}s: {unions / one_scan:.1f}x one scan (same features)")
        lake_context.__exit__(None, None, None)
    ratios = {"union of per-day reads / one scan": unions / one_scan}
    if alone is not None:
        ratios = {"validation day by day / a month per run": alone / ours, **ratios}
    harness.record(
        "bench_history",
        args,
        title=f"a history file ({len(days)} days of {args.input.name}): validation day by day / a month per suite "
        "run; a full feature build from a union of per-day reads / one scan (same rows, same features)",
        result="; ".join(f"{value:.1f}x" for value in ratios.values())
        + f" ({rows:,} rows; validation {ours:.1f} s, features {one_scan:.1f} s ours)",
        ratios=ratios,
        goal="each at least 2x",
        met=min(ratios.values()) >= 2,
        seconds={
            "validation_ours": ours,
            "validation_day_by_day": alone or 0.0,
            "features_one_scan": one_scan,
            "features_unions": unions,
        },
        sizes={"days": len(days), "rows": rows, "scale": args.scale},
    )


if __name__ == "__main__":
    main()
