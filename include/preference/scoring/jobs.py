"""The scoring tasks: product embeddings, then customer embeddings, propensities and top-K.

Both score with the model that was ``champion`` on the logical date (see
:func:`include.preference.registry.champion_as_of`), so a backfill scores past dates with the model
of that time. Every output row carries ``model_version`` and ``input_manifests`` (the digests of
the feature partitions it was computed from); the manifests record the same and the model URI.
Outputs, all under ``scores/<output>/dt=D/``:

* ``product_embeddings``: product_id, embedding (``product_features``);
* ``customer_embeddings``: customer_id, embedding (``customer_features``), every customer;
* ``propensities``: every retrieved candidate of every active customer, with its source;
* ``recommendations``: the top ``PREFERENCE_RECOMMENDATIONS_K`` candidates per active customer;
* ``customer_profiles`` (``score_profiles``, with the customer profile model that was champion on
  the date): customer_id, profile, reconstruction_error, every customer.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
from typing import TYPE_CHECKING, Any

from include.preference.config import Settings
from include.preference.scoring.handle import ModelHandle
from include.preference.storage import ObjectStore, PartitionRef, require_manifest, upstream_entry
from include.preference.storage.spark_lake import SparkLake, spark_lake

if TYPE_CHECKING:
    from pyspark.sql import DataFrame, SparkSession

log = logging.getLogger(__name__)

SCORES = "scores"
FEATURES = "features"


def champion_handle(settings: Settings, day: dt.date, name: str | None = None) -> ModelHandle | None:
    """The model that was champion on ``day``, or None when no model was champion yet.

    ``name``: the registered model (the preference model unless told).
    """
    import mlflow
    from mlflow.tracking import MlflowClient

    from include.preference.registry import champion_as_of, model_name

    mlflow.set_tracking_uri(settings.mlflow_tracking_uri)
    name = name or model_name()
    version = champion_as_of(MlflowClient(settings.mlflow_tracking_uri), name, day)
    if version is None:
        return None
    return ModelHandle(
        uri=f"models:/{name}/{version.version}",
        version=str(version.version),
        tracking_uri=settings.mlflow_tracking_uri,
        name=name,
    )


def _input(spark: "SparkSession", lake: SparkLake, layer: str, table: str, day: dt.date, upstream: list) -> "DataFrame":
    """Register a published partition as an input and read it (from the files its manifest lists)."""
    ref = PartitionRef(layer, table, day)
    manifest = lake.add(ref, require_manifest(lake.store, ref))
    upstream.append(upstream_entry(lake.store, ref, manifest))
    return lake.need(spark, ref, "scoring needs it")


def _output(table: str, day: dt.date) -> PartitionRef:
    return PartitionRef(SCORES, table, day)


def _tags(handle: ModelHandle, upstream: list[dict[str, Any]]) -> dict[str, str]:
    manifests = {entry["uri"]: entry["sha256"] for entry in upstream}
    return {"model_version": handle.version, "input_manifests": json.dumps(manifests, sort_keys=True)}


def _publish(lake, settings, table, day, run_id, upstream, handle, extra=None) -> int:
    manifest = lake.publish(
        _output(table, day),
        run_id=run_id,
        code_version=settings.code_version,
        upstream=upstream,
        extra={"model_version": handle.version, "model_uri": handle.uri, **(extra or {})},
    )
    return int(manifest.row_count or 0)


def run_product_scoring(
    store: ObjectStore, settings: Settings, day: dt.date, *, run_id: str, handle: ModelHandle | None = None
) -> dict[str, Any]:
    """Publish ``scores/product_embeddings/dt=day`` (``{"skipped": reason}`` without a champion)."""
    from include.preference.scoring.batch import PRODUCT, embeddings
    from include.preference.spark import spark_session

    handle = handle or champion_handle(settings, day)
    if handle is None:
        return {"date": day.isoformat(), "skipped": f"no model was champion on {day}"}
    with spark_lake(store, f"score-products-{day}") as lake:
        upstream: list[dict[str, Any]] = []
        spark = spark_session("score_products", reuse_workers=True, s3=settings.s3)
        frame = _input(spark, lake, FEATURES, "products", day, upstream)
        output = _output("product_embeddings", day)
        lake.write_table(embeddings(frame, handle, "product", _tags(handle, upstream)), output, [PRODUCT])
        rows = _publish(lake, settings, "product_embeddings", day, run_id, upstream, handle)
    return {"date": day.isoformat(), "model_version": handle.version, "product_embeddings": rows}


def run_profile_scoring(
    store: ObjectStore, settings: Settings, day: dt.date, *, run_id: str, handle: ModelHandle | None = None
) -> dict[str, Any]:
    """Publish ``scores/customer_profiles/dt=day`` (``{"skipped": reason}`` without a profile champion)."""
    from include.preference.registry import profile_model_name
    from include.preference.scoring.batch import CUSTOMER, profiles
    from include.preference.spark import spark_session

    handle = handle or champion_handle(settings, day, profile_model_name())
    if handle is None:
        return {"date": day.isoformat(), "skipped": f"no customer profile model was champion on {day}"}
    with spark_lake(store, f"score-profiles-{day}") as lake:
        upstream: list[dict[str, Any]] = []
        spark = spark_session("score_profiles", reuse_workers=True, s3=settings.s3)
        frame = _input(spark, lake, FEATURES, "customers", day, upstream)
        output = _output("customer_profiles", day)
        rows = lake.write_table(profiles(frame, handle, _tags(handle, upstream)), output, [CUSTOMER])
        _publish(lake, settings, "customer_profiles", day, run_id, upstream, handle)
    return {"date": day.isoformat(), "model_version": handle.version, "customer_profiles": rows}


def run_customer_scoring(
    store: ObjectStore, settings: Settings, day: dt.date, *, run_id: str, handle: ModelHandle | None = None
) -> dict[str, Any]:
    """Publish the day's customer embeddings, candidate propensities and top-K recommendations.

    Needs ``scores/product_embeddings/dt=day`` from the same model version (retrieval uses them).
    """
    from include.preference.errors import PartitionNotFound
    from include.preference.features import spec
    from include.preference.features.build import pair_features
    from include.preference.scoring import batch
    from include.preference.spark import spark_session
    from include.preference.storage import read_manifest

    handle = handle or champion_handle(settings, day)
    if handle is None:
        return {"date": day.isoformat(), "skipped": f"no model was champion on {day}"}
    embedded = read_manifest(store, PartitionRef(SCORES, "product_embeddings", day))
    if embedded is None or embedded.extra.get("model_version") != handle.version:
        found = None if embedded is None else embedded.extra.get("model_version")
        raise PartitionNotFound(
            f"scores/product_embeddings/dt={day} must come from model version {handle.version} "
            f"(found {found or 'none'}); run score_products for {day} first"
        )
    with spark_lake(store, f"score-customers-{day}") as lake:
        upstream: list[dict[str, Any]] = []
        spark = spark_session("score_customers", reuse_workers=True, s3=settings.s3)
        read = {
            table: _input(spark, lake, FEATURES, table, day, upstream)
            for table in ("customers", "products", "state_pairs", "state_customer_categories")
        }
        read["product_embeddings"] = _input(spark, lake, SCORES, "product_embeddings", day, upstream)
        tags = _tags(handle, upstream)
        counts = {}
        counts["customer_embeddings"] = lake.write_table(
            batch.embeddings(read["customers"], handle, "customer", tags),
            _output("customer_embeddings", day),
            [batch.CUSTOMER],
        )

        active = batch.active_customers(read["customers"], settings.active_days)
        neighbours = batch.product_neighbours(read["product_embeddings"])
        candidates = batch.candidates(
            active, read["state_pairs"], read["state_customer_categories"], read["products"], neighbours
        )
        pairs = pair_features(
            candidates, read["state_pairs"], read["state_customer_categories"], read["customers"], read["products"], day
        )
        rows = (
            candidates.join(read["customers"], batch.CUSTOMER)
            .join(read["products"], batch.PRODUCT)
            .join(pairs, [batch.CUSTOMER, batch.PRODUCT])
            .select(batch.CUSTOMER, batch.PRODUCT, "source", *(f.name for f in spec.FEATURES))
        )
        keys = [batch.CUSTOMER, batch.PRODUCT]
        counts["propensities"] = lake.write_table(
            batch.propensities(rows, handle, tags, keep=("source",)), _output("propensities", day), keys
        )
        scored = lake.need(spark, _output("propensities", day), "it was just written")
        counts["recommendations"] = lake.write_table(
            batch.top_k(scored, settings.recommendations_k),
            _output("recommendations", day),
            [batch.CUSTOMER],
            order=[batch.CUSTOMER, "rank"],
        )
        extra = {"k": settings.recommendations_k, "active_days": settings.active_days}
        for table in ("customer_embeddings", "propensities", "recommendations"):
            _publish(lake, settings, table, day, run_id, upstream, handle, extra)
    return {"date": day.isoformat(), "model_version": handle.version, **counts}
