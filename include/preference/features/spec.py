"""The feature spec: the one place that names every model input, its dtype and its default.

The Spark feature job writes these columns, the training-data job packs them into TFRecords and
Parquet with a schema file generated from here, the model builds its Keras inputs from here, and
the MLflow signature is derived from here. Changing a feature means changing this module only.

TFRecord layout (one ``tf.train.Example`` per row): the numeric features of each entity are packed
in spec order into one float list (``customer_numeric``, ``product_numeric``, ``pair_numeric``),
the categorical features into one bytes list (``categorical``), plus ``label`` and the keys
(``customer_id``, ``product_id``, ``anchor_date``) under their own names. Packing keeps an example
small (feature names are written once per group, not once per value), which makes writing and
parsing several times faster; :func:`parse_examples` unpacks the lists back into named tensors,
so readers still see one tensor per feature. ``schema.json`` names every position.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import pyarrow as pa

SPEC_VERSION = 3
# A customer's 90-day interactions split over full category paths hashed into this many buckets: a
# fixed-width description of what the customer likes, whatever the catalogue's categories are.
CATEGORY_BUCKETS = 32
WINDOWS = (7, 30, 90)
AFFINITY_WINDOW = 90
BUYER_WINDOW = 30
# Days-since features of something that never happened take this value (and a flag says so).
NEVER_DAYS = 3650.0
ENTITIES = ("customer", "product", "pair")
KEYS = ("customer_id", "product_id")
LABEL = "label"
UNKNOWN = "unknown"
PACKED_CATEGORICAL = "categorical"


@dataclass(frozen=True)
class Feature:
    """One model input.

    Attributes:
        name: column name everywhere (Spark output, Parquet, parsed TFRecord, Keras input).
        entity: ``customer``, ``product`` or ``pair``.
        kind: ``numeric`` (float32) or ``categorical`` (string).
        transform: for numerics, ``log1p`` (counts, amounts, days: heavy right tails) or ``identity``
            (rates, shares, flags); applied inside the model before normalisation.
        description: what it measures, as of the logical date.
    """

    name: str
    entity: str
    kind: str
    transform: str = "identity"
    description: str = ""

    @property
    def default(self) -> float | str:
        return 0.0 if self.kind == "numeric" else UNKNOWN


def _windowed(entity: str, measure: str, what: str) -> list[Feature]:
    return [
        Feature(f"{entity}_{measure}_{w}d", entity, "numeric", "log1p", f"{what} in the last {w} days") for w in WINDOWS
    ]


def _rates(entity: str, measure: str, what: str) -> list[Feature]:
    return [
        Feature(f"{entity}_{measure}_{w}d", entity, "numeric", "identity", f"{what}, last {w} days") for w in WINDOWS
    ]


CUSTOMER_FEATURES: tuple[Feature, ...] = (
    Feature("customer_recency_days", "customer", "numeric", "log1p", "days since the last order (NEVER_DAYS if none)"),
    Feature("customer_has_ordered", "customer", "numeric", description="1 if the customer ever ordered"),
    Feature("customer_frequency", "customer", "numeric", "log1p", "distinct orders, all time"),
    Feature("customer_monetary", "customer", "numeric", "log1p", "order revenue, all time"),
    Feature("customer_units", "customer", "numeric", "log1p", "units ordered, all time"),
    Feature("customer_days_since_active", "customer", "numeric", "log1p", "days since the last event"),
    Feature("customer_tenure_days", "customer", "numeric", "log1p", "days since the customer was first seen"),
    *_windowed("customer", "views", "product views"),
    *_windowed("customer", "searches", "searches"),
    *_windowed("customer", "carts", "add-to-cart events"),
    *_windowed("customer", "purchases", "purchase events"),
    *_windowed("customer", "sessions", "sessions"),
    *_windowed("customer", "orders", "distinct orders"),
    *_windowed("customer", "revenue", "order revenue"),
    *_rates("customer", "conversion", "purchase events per view"),
    *_rates("customer", "cart_rate", "add-to-cart events per view"),
    Feature("customer_view_price_90d", "customer", "numeric", "log1p", "mean price of viewed products, 90 days"),
    Feature("customer_order_price_90d", "customer", "numeric", "log1p", "mean unit price ordered, 90 days"),
    Feature("customer_top_category_share", "customer", "numeric", description="share of 90-day interactions"),
    *(
        Feature(
            f"customer_category_share_b{bucket}",
            "customer",
            "numeric",
            description=f"share of 90-day interactions in categories hashing to bucket {bucket}",
        )
        for bucket in range(CATEGORY_BUCKETS)
    ),
    Feature("customer_country", "customer", "categorical", description="country on the customer record"),
    Feature("customer_age_band", "customer", "categorical", description="age band on the customer record"),
    Feature("customer_top_category", "customer", "categorical", description="most-interacted top category, 90d"),
)

PRODUCT_FEATURES: tuple[Feature, ...] = (
    Feature("product_price", "product", "numeric", "log1p", "catalogue price"),
    Feature("product_age_days", "product", "numeric", "log1p", "days since the product was first seen"),
    *_windowed("product", "views", "views"),
    *_windowed("product", "carts", "add-to-cart events"),
    *_windowed("product", "purchases", "purchase events"),
    *_windowed("product", "units", "units ordered"),
    *_rates("product", "conversion", "purchase events per view"),
    Feature("product_buyers", "product", "numeric", "log1p", "distinct customers who ordered it, all time"),
    Feature(f"product_buyers_{BUYER_WINDOW}d", "product", "numeric", "log1p", "distinct buyers, last 30 days"),
    Feature("product_repeat_share", "product", "numeric", description="share of its buyers who ordered it twice+"),
    Feature("product_category", "product", "categorical", description="full category path"),
    Feature("product_top_category", "product", "categorical", description="first level of the category path"),
    Feature("product_brand", "product", "categorical", description="brand"),
)

PAIR_FEATURES: tuple[Feature, ...] = (
    Feature("pair_views", "pair", "numeric", "log1p", "this customer's views of this product, all time"),
    Feature("pair_carts", "pair", "numeric", "log1p", "this customer's add-to-carts of this product"),
    Feature("pair_purchases", "pair", "numeric", "log1p", "this customer's purchase events of this product"),
    Feature("pair_units", "pair", "numeric", "log1p", "units of this product this customer ordered"),
    Feature("pair_days_since_interaction", "pair", "numeric", "log1p", "days since the last event on it"),
    Feature("pair_days_since_order", "pair", "numeric", "log1p", "days since this customer last ordered it"),
    Feature("pair_has_ordered", "pair", "numeric", description="1 if this customer ever ordered it"),
    Feature("pair_category_affinity", "pair", "numeric", description="customer's 90-day share in its top category"),
    Feature("pair_price_ratio", "pair", "numeric", "log1p", "its price over the customer's mean viewed price"),
    # Repurchase: how often and how regularly this customer buys this product again.
    Feature("pair_order_days", "pair", "numeric", "log1p", "distinct days this customer ordered it"),
    Feature("pair_days_since_first_order", "pair", "numeric", "log1p", "days since the first order (NEVER_DAYS)"),
    Feature(
        "pair_repurchase_interval",
        "pair",
        "numeric",
        "log1p",
        "mean days between its order days (NEVER_DAYS below two order days)",
    ),
    Feature(
        "pair_repurchase_due", "pair", "numeric", "log1p", "days since its last order over that interval (0 if none)"
    ),
    Feature(
        "pair_customer_repurchase_due",
        "pair",
        "numeric",
        "log1p",
        "days since its last order over the customer's median interval across products (0 if none)",
    ),
    Feature(
        "pair_product_repurchase_due",
        "pair",
        "numeric",
        "log1p",
        "days since its last order over the product's median interval across customers (0 if none)",
    ),
)

FEATURES: tuple[Feature, ...] = CUSTOMER_FEATURES + PRODUCT_FEATURES + PAIR_FEATURES
BY_NAME: dict[str, Feature] = {f.name: f for f in FEATURES}


def features_of(entity: str, kind: str | None = None) -> tuple[Feature, ...]:
    """The features of one entity (optionally one kind), in spec order."""
    if entity not in ENTITIES:
        raise ValueError(f"unknown entity {entity!r}; expected one of {', '.join(ENTITIES)}")
    return tuple(f for f in FEATURES if f.entity == entity and (kind is None or f.kind == kind))


def numeric_names(entity: str | None = None) -> tuple[str, ...]:
    entities = ENTITIES if entity is None else (entity,)
    return tuple(f.name for e in entities for f in features_of(e, "numeric"))


def categorical_names(entity: str | None = None) -> tuple[str, ...]:
    entities = ENTITIES if entity is None else (entity,)
    return tuple(f.name for e in entities for f in features_of(e, "categorical"))


def packed_name(entity: str) -> str:
    """The TFRecord feature holding an entity's numeric vector."""
    return f"{entity}_numeric"


def example_columns() -> tuple[str, ...]:
    """Columns of a training example row, in order: keys, anchor date, label, then every feature."""
    return (*KEYS, "anchor_date", LABEL, *(f.name for f in FEATURES))


def example_arrow_schema() -> "pa.Schema":
    """The Parquet schema of training examples."""
    import pyarrow as pa

    fields = [
        pa.field("customer_id", pa.string(), nullable=False),
        pa.field("product_id", pa.string(), nullable=False),
        pa.field("anchor_date", pa.date32(), nullable=False),
        pa.field(LABEL, pa.float32(), nullable=False),
    ]
    for feature in FEATURES:
        kind = pa.float32() if feature.kind == "numeric" else pa.string()
        fields.append(pa.field(feature.name, kind, nullable=False))
    return pa.schema(fields)


def tfrecord_schema() -> dict[str, Any]:
    """The schema file written beside the TFRecord shards (JSON-able)."""
    packed = {
        packed_name(entity): {
            "dtype": "float32",
            "shape": [len(numeric_names(entity))],
            "names": list(numeric_names(entity)),
        }
        for entity in ENTITIES
    }
    body = {
        "spec_version": SPEC_VERSION,
        "compression": "GZIP",
        "keys": {name: {"dtype": "string", "shape": [1]} for name in (*KEYS, "anchor_date")},
        "label": {"name": LABEL, "dtype": "float32", "shape": [1]},
        "packed_numeric": packed,
        "packed_categorical": {
            PACKED_CATEGORICAL: {
                "dtype": "string",
                "shape": [len(categorical_names())],
                "names": list(categorical_names()),
            }
        },
        "features": [
            {"name": f.name, "entity": f.entity, "kind": f.kind, "transform": f.transform, "description": f.description}
            for f in FEATURES
        ],
    }
    body["fingerprint"] = spec_fingerprint()
    return body


def spec_fingerprint() -> str:
    """A short digest of the feature list: a model trained on one spec refuses data of another."""
    text = json.dumps([(f.name, f.entity, f.kind, f.transform) for f in FEATURES] + [SPEC_VERSION])
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def tf_feature_description() -> dict[str, Any]:
    """The ``tf.io.parse_example`` description of the TFRecord layout."""
    import tensorflow as tf

    description: dict[str, Any] = {name: tf.io.FixedLenFeature([], tf.string) for name in (*KEYS, "anchor_date")}
    description[LABEL] = tf.io.FixedLenFeature([], tf.float32)
    for entity in ENTITIES:
        description[packed_name(entity)] = tf.io.FixedLenFeature([len(numeric_names(entity))], tf.float32)
    description[PACKED_CATEGORICAL] = tf.io.FixedLenFeature([len(categorical_names())], tf.string)
    return description


def parse_examples(serialized: Any) -> dict[str, Any]:
    """Parse a batch of serialized examples into one tensor per column (keys, label, every feature)."""
    import tensorflow as tf

    parsed = tf.io.parse_example(serialized, tf_feature_description())
    columns: dict[str, Any] = {name: parsed[name] for name in (*KEYS, "anchor_date", LABEL)}
    columns.update(zip(categorical_names(), tf.unstack(parsed[PACKED_CATEGORICAL], axis=-1), strict=True))
    for entity in ENTITIES:
        vectors = tf.unstack(parsed[packed_name(entity)], axis=-1)
        columns.update(zip(numeric_names(entity), vectors, strict=True))
    return columns


def model_inputs(columns: Mapping[str, Any]) -> dict[str, Any]:
    """Only the model's inputs (every feature) from a parsed or tabular row set."""
    return {f.name: columns[f.name] for f in FEATURES}


def mlflow_signature() -> Any:
    """The MLflow model signature: one 1-D tensor per feature in, the propensity out (Keras flavour)."""
    import numpy as np
    from mlflow.models.signature import ModelSignature
    from mlflow.types.schema import Schema, TensorSpec

    inputs = Schema(
        [TensorSpec(np.dtype("float32" if f.kind == "numeric" else "object"), (-1,), f.name) for f in FEATURES]
    )
    outputs = Schema([TensorSpec(np.dtype("float32"), (-1, 1), "propensity")])
    return ModelSignature(inputs=inputs, outputs=outputs)
