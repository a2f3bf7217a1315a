"""Feature and training-data jobs against the lake: register inputs, run Spark, publish with manifests.

Spark reads the inputs from the files their manifests list and writes to a work area in the lake
(:mod:`include.preference.storage.spark_lake`); nothing passes through the driver's disk.

The incremental path reads the day's validated partitions, the previous day's state and the
dailies leaving a window. It is taken only when the previous state is intact: every state
manifest records which validated inputs it folded (``folded``: day -> digest of that day's
validated manifests), and every day of the longest window must still have those inputs (a few
hundred small manifest reads, in parallel). Otherwise (first day, a gap, a rewritten past day)
the job recomputes in full from every validated day up to D, which gives the same result by
construction, and republishes the dailies of the days still inside a window.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import logging
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from include.preference.config import Settings
from include.preference.features.aggregates import AGGREGATES
from include.preference.features.build import FEATURE_LAYER, SOURCE_TABLES, build_features
from include.preference.features.examples import ExampleSettings, build_training_examples, horizon_days_of
from include.preference.features.spec import WINDOWS, spec_fingerprint
from include.preference.storage import (
    Manifest,
    ObjectStore,
    PartitionRef,
    list_partitions,
    read_manifest,
    require_manifest,
    upstream_entry,
)
from include.preference.storage.spark_lake import SparkLake, spark_lake

log = logging.getLogger(__name__)

FEATURE_TABLES = (
    *(f"daily_{a.name}" for a in AGGREGATES),
    *(f"state_{a.name}" for a in AGGREGATES),
    "customers",
    "products",
)
KEEP_FOLDED_DAYS = max(WINDOWS)
# A day's dailies are computed from these validated tables; their manifests make the day's digest.
FOLDED_TABLES = ("events", "orders", "products")


def source_digest(manifests: Mapping[str, Manifest]) -> str:
    """One digest of a day's validated inputs (their manifests' hashes)."""
    joined = "|".join(f"{name}:{manifests[name].sha256}" for name in sorted(manifests))
    return hashlib.sha256(joined.encode()).hexdigest()[:16]


def _validated(store: ObjectStore, day: dt.date) -> dict[str, Manifest]:
    return {t: require_manifest(store, PartitionRef("validated", t, day)) for t in SOURCE_TABLES}


def _stage(store: ObjectStore, ref: PartitionRef, lake: SparkLake, manifest: Manifest | None = None) -> Manifest:
    """Register a partition as an input of the job and return its manifest (read once, here or by the caller)."""
    return lake.add(ref, manifest or require_manifest(store, ref))


def _day_digest(store: ObjectStore, day: dt.date) -> str | None:
    manifests = {}
    for table in FOLDED_TABLES:
        manifest = read_manifest(store, PartitionRef("validated", table, day))
        if manifest is None:
            return None
        manifests[table] = manifest
    return source_digest(manifests)


def plan_mode(store: ObjectStore, day: dt.date) -> tuple[str, str]:
    """``incremental`` or ``full`` for the build of ``day``, with the reason."""
    mode, reason, _ = _plan(store, day)
    return mode, reason


def _plan(store: ObjectStore, day: dt.date) -> tuple[str, str, list[Manifest]]:
    """The mode and its reason, with the previous day's state manifests when incremental."""
    previous = day - dt.timedelta(days=1)
    found = [read_manifest(store, PartitionRef(FEATURE_LAYER, f"state_{a.name}", previous)) for a in AGGREGATES]
    states = [m for m in found if m is not None]
    if len(states) != len(found):
        return "full", f"no complete state as of {previous}", []
    folded: dict[str, str] = dict(states[0].extra.get("folded", {}))
    if any(dict(m.extra.get("folded", {})) != folded for m in states):
        return "full", f"the state tables of {previous} disagree on their inputs", []
    if states[0].extra.get("spec") != spec_fingerprint():
        return "full", "the feature spec changed since the previous state", []
    # Every day still inside a window (and the days leaving one) must have the inputs the state folded.
    checked = [day - dt.timedelta(days=back) for back in range(1, max(WINDOWS) + 1)]
    with ThreadPoolExecutor(max_workers=16) as pool:
        current = dict(zip(checked, pool.map(lambda d: _day_digest(store, d), checked), strict=True))
    for past in checked:
        if folded.get(past.isoformat()) != current[past]:
            return "full", f"validated inputs of {past} changed since they were folded into the state", []
    return "incremental", f"state of {previous} is intact", states


def run_feature_build(store: ObjectStore, settings: Settings, day: dt.date, *, run_id: str) -> dict[str, Any]:
    """Build and publish the features as of ``day`` (see the module docstring for the mode)."""
    from include.preference.spark import spark_session

    today_manifests = _validated(store, day)
    mode, reason, states = _plan(store, day)
    log.info("feature build of %s: %s (%s)", day, mode, reason)
    upstream = [upstream_entry(store, PartitionRef("validated", t, day), m) for t, m in today_manifests.items()]

    with spark_lake(store, f"features-{day}") as lake:
        validated_by_day: dict[dt.date, dict[str, Manifest]] = {}
        if mode == "incremental":
            previous = day - dt.timedelta(days=1)
            for table, manifest in today_manifests.items():
                _stage(store, PartitionRef("validated", table, day), lake, manifest)
            for aggregate, manifest in zip(AGGREGATES, states, strict=True):
                ref = PartitionRef(FEATURE_LAYER, f"state_{aggregate.name}", previous)
                _stage(store, ref, lake, manifest)
                upstream.append(upstream_entry(store, ref, manifest))
            previous_folded = dict(states[0].extra.get("folded", {}))
            for aggregate in AGGREGATES:
                for window in aggregate.windows:
                    ref = PartitionRef(FEATURE_LAYER, f"daily_{aggregate.name}", day - dt.timedelta(days=window))
                    if (expiring := read_manifest(store, ref)) is not None:
                        _stage(store, ref, lake, expiring)
                        upstream.append(upstream_entry(store, ref, expiring))
        else:
            for past in (d for d in list_partitions(store, "validated", "events") if d <= day):
                validated_by_day[past] = {
                    t: _stage(
                        store, PartitionRef("validated", t, past), lake, today_manifests[t] if past == day else None
                    )
                    for t in FOLDED_TABLES
                }
            _stage(store, PartitionRef("validated", "customers", day), lake, today_manifests["customers"])
            previous_folded = {d.isoformat(): source_digest(m) for d, m in validated_by_day.items()}

        spark = spark_session("build_features", s3=settings.s3)
        build_features(spark, lake, day, mode=mode)

        folded = {
            **previous_folded,
            day.isoformat(): source_digest({t: today_manifests[t] for t in FOLDED_TABLES}),
        }
        oldest = (day - dt.timedelta(days=KEEP_FOLDED_DAYS)).isoformat()
        folded = {d: v for d, v in sorted(folded.items()) if d >= oldest}
        extra = {"mode": mode, "reason": reason, "spec": spec_fingerprint()}
        published = {}
        for table in FEATURE_TABLES:
            ref = PartitionRef(FEATURE_LAYER, table, day)
            table_extra = {**extra, "folded": folded} if table.startswith("state_") else extra
            manifest = lake.publish(
                ref,
                run_id=run_id,
                code_version=settings.code_version,
                upstream=upstream,
                extra=table_extra,
            )
            published[table] = manifest.row_count
        if mode == "full":
            published["past_dailies"] = _publish_past_dailies(
                store, settings, lake, day, validated_by_day, run_id=run_id
            )
    return {"date": day.isoformat(), "mode": mode, "reason": reason, "rows": published}


def _publish_past_dailies(
    store: ObjectStore,
    settings: Settings,
    lake: SparkLake,
    day: dt.date,
    validated_by_day: Mapping[dt.date, Mapping[str, Manifest]],
    *,
    run_id: str,
) -> int:
    """Publish the dailies a full build recomputed for earlier days still inside a window.

    Their inputs are the validated partitions of their own day (manifests as staged); unchanged
    ones are left as they are.
    """
    published = 0
    for aggregate in AGGREGATES:
        table = f"daily_{aggregate.name}"
        for past in lake.days(FEATURE_LAYER, table, day - dt.timedelta(days=1)):
            inputs = validated_by_day[past]
            lake.publish(
                PartitionRef(FEATURE_LAYER, table, past),
                run_id=run_id,
                code_version=settings.code_version,
                upstream=[upstream_entry(store, PartitionRef("validated", t, past), m) for t, m in inputs.items()],
                extra={"mode": "full", "reason": f"recomputed by the full build of {day}", "spec": spec_fingerprint()},
                if_changed=True,
            )
            published += 1
    return published


def run_training_build(store: ObjectStore, settings: Settings, day: dt.date, *, run_id: str) -> dict[str, Any]:
    """Build and publish the training examples of the anchor ``day - horizon`` if its horizon is complete.

    The run of day D completes the horizon of anchor A = D - H (labels are the orders of A+1 .. D).

    Returns:
        ``{"skipped": reason}`` when the anchor has no features or a horizon day is missing,
        else the anchor, the counts and the partition URI.
    """
    from include.preference.spark import spark_session

    example_settings = ExampleSettings(
        horizon_days=settings.horizon_days,
        negatives_per_positive=settings.negatives_per_positive,
        seed=settings.sampling_seed,
    )
    anchor = day - dt.timedelta(days=example_settings.horizon_days)
    inputs = [
        PartitionRef(FEATURE_LAYER, t, anchor)
        for t in ("customers", "products", "state_pairs", "state_customer_categories")
    ]
    inputs += [PartitionRef("validated", "orders", d) for d in horizon_days_of(anchor, example_settings.horizon_days)]
    manifests = {ref: read_manifest(store, ref) for ref in inputs}
    missing = [ref.prefix for ref, manifest in manifests.items() if manifest is None]
    if missing:
        reason = (
            f"anchor {anchor} is not ready: {', '.join(missing[:3])}{' ...' if len(missing) > 3 else ''} not published"
        )
        log.info(reason)
        return {"date": day.isoformat(), "anchor": anchor.isoformat(), "skipped": reason}

    target = PartitionRef("training", "", anchor)
    with spark_lake(store, f"training-{anchor}") as lake:
        upstream = []
        for ref, manifest in manifests.items():
            upstream.append(upstream_entry(store, ref, _stage(store, ref, lake, manifest)))
        spark = spark_session("build_training_data", s3=settings.s3)
        counts = build_training_examples(spark, lake, anchor, example_settings, target)
        shards = counts.pop("shards")
        manifest = lake.publish(
            target,
            run_id=run_id,
            code_version=settings.code_version,
            upstream=upstream,
            rows=shards,
            extra={
                **counts,
                "horizon_days": example_settings.horizon_days,
                "negatives_per_positive": example_settings.negatives_per_positive,
                "seed": example_settings.seed,
                "spec": spec_fingerprint(),
                "label_days": [d.isoformat() for d in horizon_days_of(anchor, example_settings.horizon_days)],
            },
        )
    return {
        "date": day.isoformat(),
        "anchor": anchor.isoformat(),
        "uri": store.uri(target.prefix),
        "version": manifest.version,
        **counts,
    }
