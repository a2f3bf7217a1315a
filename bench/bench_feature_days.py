"""A day's feature build at day 180 of history vs day 10 (goal: at most 1.2x).

    .venv/bin/python bench/bench_feature_days.py [--early 10] [--late 180] [--repeat 3]

Against a real S3 server (SeaweedFS, started here) holding validated days of the synthetic
marketplace at its default scale, it brings the feature state up to the day before ``--early``
and ``--late`` with one full build each, then times the daily task, ``run_feature_build``, on the
next day: stage inputs from S3, Spark, publish with manifests. Rerunning a day is idempotent and
stays incremental, so each is timed ``--repeat`` times (median). The ratio shows whether a day's
cost grows with history; the full recompute of the late day is timed once for comparison.

The days are the generator's tables shaped as validation publishes them (cancellations removed):
the validation suites themselves are measured by ``bench_validation.py``.
"""

from __future__ import annotations

import datetime as dt
import os
import statistics
import tempfile
import time
from pathlib import Path

import harness
import pyarrow.compute as pc
from lake import running_lake

from include.preference.config import load_settings
from include.preference.features.jobs import run_feature_build
from include.preference.sources.synthetic import SyntheticConfig, generate_day
from include.preference.storage import ObjectStore, PartitionRef, publish_table, read_manifest

EPOCH = dt.date(2025, 1, 1)


def publish_validated(store: ObjectStore, config: SyntheticConfig, day: dt.date) -> int:
    tables = generate_day(config, day)
    tables["orders"] = tables["orders"].filter(pc.invert(tables["orders"]["is_cancellation"]))
    for name, table in tables.items():
        publish_table(store, PartitionRef("validated", name, day), table, run_id="bench", code_version="bench")
    return tables["events"].num_rows


def main() -> None:
    parser = harness.parser(__doc__)
    parser.add_argument("--early", type=int, default=10)
    parser.add_argument("--late", type=int, default=180)
    parser.add_argument("--repeat", type=int, default=3)
    args = harness.pick(parser.parse_args(), early=1, late=2, repeat=1)
    config = SyntheticConfig(customers=100, products=40, sessions_per_day=40) if args.quick else SyntheticConfig()

    with tempfile.TemporaryDirectory() as home, running_lake(Path(home)) as (runtime, store):
        os.environ.update(runtime.client_env())
        os.environ["PREFERENCE_BUCKET"] = store.bucket
        os.environ["PREFERENCE_LOCAL_DIR"] = str(Path(home) / "local")
        settings = load_settings()
        start = time.perf_counter()
        events = sum(publish_validated(store, config, EPOCH + dt.timedelta(days=i)) for i in range(args.late + 1))
        print(
            f"{args.late + 1} validated days published ({events:,} events, {config.customers:,} customers, "
            f"{config.products:,} products) in {time.perf_counter() - start:.0f}s"
        )
        timings: dict[int, list[float]] = {}
        for index in (args.early, args.late):
            day = EPOCH + dt.timedelta(days=index)
            start = time.perf_counter()
            before = day - dt.timedelta(days=1)
            # The state as of the day before, built in full unless a timed day already published it.
            if read_manifest(store, PartitionRef("features", "state_pairs", before)) is None:
                run_feature_build(store, settings, before, run_id="bench-setup")
            setup = time.perf_counter() - start
            timings[index] = []
            for _ in range(args.repeat):
                start = time.perf_counter()
                result = run_feature_build(store, settings, day, run_id="bench")
                timings[index].append(time.perf_counter() - start)
                assert result["mode"] == "incremental", result
            pairs = read_manifest(store, PartitionRef("features", "state_pairs", day)).row_count
            print(
                f"day {index:4d}: incremental {statistics.median(timings[index]):6.1f}s (median of "
                f"{args.repeat}; state_pairs {pairs:,} rows); full build of the day before took {setup:.1f}s"
            )
        late_day = EPOCH + dt.timedelta(days=args.late)
        store.delete_keys(list(store.list_keys(f"features/state_customers/dt={late_day - dt.timedelta(days=1)}/")))
        start = time.perf_counter()
        assert run_feature_build(store, settings, late_day, run_id="bench-full")["mode"] == "full"
        full = time.perf_counter() - start
    early, late = (statistics.median(timings[i]) for i in (args.early, args.late))
    print(f"full recompute of day {args.late}: {full:.1f}s ({full / late:.1f}x the incremental day)")
    print(f"day {args.late} / day {args.early} incremental time: {late / early:.2f}x  (goal: at most 1.2x)")
    harness.record(
        "bench_feature_days",
        args,
        title=f"the daily feature task (Spark reading S3, publish) at day {args.late} of history / day {args.early}",
        result=f"{late / early:.2f}x ({late:.1f} s vs {early:.1f} s; {config.customers:,} customers, "
        f"{config.products:,} products; the full recompute of day {args.late} takes {full / late:.1f}x)",
        ratios={f"day {args.late} / day {args.early}": late / early, "full recompute / incremental": full / late},
        goal="at most 1.2x",
        met=late / early <= 1.2,
        seconds={"early": early, "late": late, "full": full},
        sizes={"days": args.late + 1, "events": events, "customers": config.customers, "products": config.products},
    )


if __name__ == "__main__":
    main()
