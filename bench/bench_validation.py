"""Validation throughput for a day of about 1M events: pandas backend vs Spark backend.

    .venv/bin/python bench/bench_validation.py [--sessions 270000] [--backends pandas,spark]

Runs the same suites (casting, every rule, Data Docs) over one synthetic day whose events table
has about a million rows, once per backend, and prints events per second for each, the ratio,
and which backend the pipeline picks for a day of this size.
"""

from __future__ import annotations

import datetime as dt
import tempfile
import time
from pathlib import Path

import harness

from include.preference.sources.synthetic import SyntheticConfig, generate_day_frames
from include.preference.validation import validate_day
from include.preference.validation.engine import SPARK_ROWS_DEFAULT, choose_backend


def main() -> None:
    parser = harness.parser(__doc__)
    parser.add_argument("--sessions", type=int, default=270_000)
    parser.add_argument("--backends", default="pandas,spark")
    args = harness.pick(parser.parse_args(), sessions=300, backends="pandas,spark")

    day = dt.date(2025, 6, 7)  # a Saturday: the busiest weekday
    tables = generate_day_frames(
        SyntheticConfig(customers=100_000, products=10_000, sessions_per_day=args.sessions), day
    )
    events = len(tables["events"])
    rows = sum(len(t) for t in tables.values())
    print(f"day {day}: {events:,} events, {rows:,} rows in all tables")
    seconds = {}
    for backend in args.backends.split(","):
        with tempfile.TemporaryDirectory() as docs:
            if backend == "spark":  # start the JVM outside the timing: a worker keeps it warm
                from include.preference.spark import spark_session

                spark_session("validation").range(1).count()
            start = time.perf_counter()
            result = validate_day(day, tables, Path(docs), backend=backend)
            seconds[backend] = time.perf_counter() - start
        quarantined = sum(len(o.quarantine) for o in result.tables.values())
        print(
            f"{backend:7s} {seconds[backend]:8.1f}s  {events / seconds[backend]:10,.0f} events/s  "
            f"(quarantined {quarantined:,})"
        )
    picked = choose_backend(events)
    print(
        f"backend the pipeline picks for {events:,} events: {picked} "
        f"(spark from {SPARK_ROWS_DEFAULT:,} rows; PREFERENCE_VALIDATION_SPARK_ROWS)"
    )
    if {"pandas", "spark"} <= set(seconds):
        ratio = seconds["spark"] / seconds["pandas"]
        print(f"spark / pandas time ratio: {ratio:.2f}x")
        faster = "spark" if ratio < 1 else "pandas"
        harness.record(
            "bench_validation",
            args,
            title="a day's suites (casting, every rule, Data Docs) on Spark / on pandas",
            result=f"{ratio:.2f}x ({events:,} events; {events / seconds['pandas']:,.0f} events/s on pandas); "
            f"the pipeline picks {picked} for this size",
            ratios={"spark / pandas": ratio},
            goal="the pipeline picks the faster backend for this size",
            met=picked == faster,
            seconds=seconds,
            sizes={"events": events, "rows": rows},
        )


if __name__ == "__main__":
    main()
