"""Cost of the partition contract against plain S3 writes and reads, on a real SeaweedFS server.

    .venv/bin/python bench/bench_storage.py [--sessions 60000] [--repeat 3]

Prints, for one synthetic day's events table: the time to publish it as a partition (version
folder + manifest + garbage collection) against serialising it and a plain put_object, and
the time to read it through the manifest against a plain get_object. Ratios near 1 mean the
contract costs little beyond the bytes themselves.
"""

from __future__ import annotations

import datetime as dt
import io
import tempfile
import time
from pathlib import Path

import harness
import pyarrow.parquet as pq
from lake import running_lake

from include.preference.sources.synthetic import SyntheticConfig, generate_day
from include.preference.storage import PartitionRef, publish_table, read_table
from include.preference.storage.partitions import parquet_bytes


def best_of(repeat: int, action) -> float:
    timings = []
    for _ in range(repeat):
        start = time.perf_counter()
        action()
        timings.append(time.perf_counter() - start)
    return min(timings)


def main() -> None:
    parser = harness.parser(__doc__)
    parser.add_argument("--sessions", type=int, default=60_000, help="synthetic sessions in the day")
    parser.add_argument("--repeat", type=int, default=3)
    args = harness.pick(parser.parse_args(), sessions=300, repeat=1)

    config = SyntheticConfig(customers=50_000, products=5_000, sessions_per_day=args.sessions)
    day = dt.date(2025, 6, 7)
    start = time.perf_counter()
    events = generate_day(config, day)["events"]
    generate_seconds = time.perf_counter() - start
    body = parquet_bytes(events)

    with tempfile.TemporaryDirectory() as home, running_lake(Path(home)) as (_, store):
        ref = PartitionRef("raw", "events", day)
        plain_put = best_of(args.repeat, lambda: store.put_bytes("plain/events.parquet", parquet_bytes(events)))
        publish = best_of(args.repeat, lambda: publish_table(store, ref, events, run_id="bench", code_version="b"))
        plain_get = best_of(args.repeat, lambda: pq.read_table(io.BytesIO(store.get_bytes("plain/events.parquet"))))
        manifest_read = best_of(args.repeat, lambda: read_table(store, ref))

    rows = events.num_rows
    print(
        f"events table: {rows:,} rows, {len(body) / 1e6:.1f} MB Parquet; generated in {generate_seconds:.2f}s "
        f"({rows / generate_seconds:,.0f} events/s)"
    )
    print(f"{'operation':38s} {'seconds':>8s} {'ratio':>7s}")
    print(f"{'serialise + plain put_object':38s} {plain_put:8.3f} {1.0:7.2f}")
    print(f"{'publish_table (serialise+manifest+GC)':38s} {publish:8.3f} {publish / plain_put:7.2f}")
    print(f"{'plain get_object + parse':38s} {plain_get:8.3f} {1.0:7.2f}")
    print(f"{'read_table (via manifest)':38s} {manifest_read:8.3f} {manifest_read / plain_get:7.2f}")
    print(f"publish overhead ratio: {publish / plain_put:.2f}x   read overhead ratio: {manifest_read / plain_get:.2f}x")
    ratios = {"publish / plain put": publish / plain_put, "manifest read / plain get": manifest_read / plain_get}
    harness.record(
        "bench_storage",
        args,
        title="a day's events published as a partition (version folder, manifest, clean-up) / serialised and put; "
        "read through the manifest / a plain get",
        result=f"{ratios['publish / plain put']:.2f}x, {ratios['manifest read / plain get']:.2f}x "
        f"({rows:,} events, {len(body) / 1e6:.1f} MB Parquet, SeaweedFS)",
        ratios=ratios,
        goal="each at most 1.5x",
        met=max(ratios.values()) <= 1.5,
        seconds={"plain put": plain_put, "publish": publish, "plain get": plain_get, "manifest read": manifest_read},
        sizes={"events": rows, "parquet_bytes": len(body)},
    )


if __name__ == "__main__":
    main()
