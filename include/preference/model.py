"""The preference model (Keras 3 functional API), built from the feature spec.

* customer encoder -> ``customer_features``, the concatenation of two parts:
  - ``customer_taste`` (the first ``TASTE_DIM`` columns): a linear map of the customer's shares of
    interactions per category bucket, i.e. *what* the customer likes;
  - ``customer_activity``: an MLP over every other feature (numeric ones log1p'd where the spec
    says so and normalised with statistics of the training data, categoricals hashed and
    embedded), i.e. *how much* and *how* the customer buys;
* product encoder -> ``product_features``: ``product_taste`` (a linear map of the embedded full
  category path) then ``product_activity`` (an MLP over the rest);
* comparator: both embeddings, their element-wise product and difference, and the pair features
  -> ``preference`` (the preference tensor);
* predictor: a sigmoid over the preference's logit plus the taste match (the dot product of the
  two taste parts) -> ``propensity``. The match term puts customers and the categories they buy
  near each other in the taste space, which is what customer and product segments are built on.

Preprocessing lives inside the model, so the saved model takes the raw feature columns. No
per-id embedding: a customer or product never seen in training is encoded from its features.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from include.preference.features import spec

if TYPE_CHECKING:
    import keras
    from pyspark.sql import DataFrame

HASH_BINS = 256
CATEGORY_DIM = 8
# The first TASTE_DIM columns of customer_features and product_features are the taste parts.
TASTE_DIM = 16
TASTE_FEATURES = {
    "customer": tuple(f.name for f in spec.CUSTOMER_FEATURES if f.name.startswith("customer_category_share_b")),
    "product": ("product_category",),
}


@dataclass(frozen=True)
class ModelConfig:
    """Sizes and optimiser settings."""

    embedding_dim: int = 32
    hidden_units: int = 64
    learning_rate: float = 0.002
    dropout: float = 0.1


def transformed(name: str, values: np.ndarray) -> np.ndarray:
    """A numeric feature as the model sees it before normalisation (log1p of magnitude, sign kept)."""
    values = np.asarray(values, dtype=np.float64)
    if spec.BY_NAME[name].transform == "log1p":
        return np.sign(values) * np.log1p(np.abs(values))
    return values


def feature_statistics(columns: Mapping[str, np.ndarray]) -> dict[str, tuple[float, float]]:
    """Mean and variance of every transformed numeric feature (from training rows)."""
    stats = {}
    for feature in spec.FEATURES:
        if feature.kind == "numeric":
            values = transformed(feature.name, columns[feature.name])
            stats[feature.name] = (float(values.mean()), float(max(values.var(), 1e-6)))
    return stats


# Exact decimal sums: the statistics do not depend on how Spark split the rows (same inputs, same
# model, on a laptop or a cluster). 28 integer digits hold the sums of squares of any feature over
# far more rows than a training set has; each value is rounded (the same way everywhere) at 1e-10.
_EXACT = "decimal(38,10)"


def spark_feature_statistics(frame: "DataFrame") -> dict[str, tuple[float, float]]:
    """:func:`feature_statistics` as one Spark aggregate over the training rows (two numbers per
    feature reach the driver, not the rows)."""
    from decimal import Decimal

    from pyspark.sql import functions as F

    names = [f.name for f in spec.FEATURES if f.kind == "numeric"]
    aggregates = [F.count(F.lit(1)).alias("_rows")]
    for name in names:
        value = F.col(name).cast("double")
        if spec.BY_NAME[name].transform == "log1p":
            value = F.signum(value) * F.log1p(F.abs(value))
        exact = value.cast(_EXACT)
        aggregates += [F.sum(exact).alias(f"{name}__sum"), F.sum(exact * exact).alias(f"{name}__squares")]
    row = frame.agg(*aggregates).collect()[0]
    rows = int(row["_rows"])
    if rows == 0:
        raise ValueError("no training rows to compute feature statistics from")
    stats = {}
    for name in names:
        total, squares = Decimal(row[f"{name}__sum"]), Decimal(row[f"{name}__squares"])
        mean = total / rows
        variance = squares / rows - mean * mean
        stats[name] = (float(mean), float(max(variance, Decimal("1e-6"))))
    return stats


def _layers() -> Any:
    """The project's custom layer (Keras imported on first use)."""
    from include.preference.layers import SignedLog1p

    return SignedLog1p


def load_model(location: str | Path) -> "keras.Model":
    """Load a saved model, with the project's custom layer registered.

    ``location``: a ``.keras`` file, or an MLflow model URI (``models:/name@alias``, ``runs:/...``).
    """
    import keras

    _layers()
    if str(location).startswith(("models:/", "runs:/")):
        import mlflow.keras

        return mlflow.keras.load_model(str(location))
    return keras.saving.load_model(location)


def predict_frame(model: "keras.Model", frame: Any) -> np.ndarray:
    """Propensities for the rows of a table holding (at least) every feature column."""
    inputs = spec.model_inputs({name: frame[name].to_numpy() for name in spec.BY_NAME})
    return np.asarray(model.predict(inputs, batch_size=8192, verbose=0))[:, 0]


def _inputs_of(
    entity: str, names: set[str], inputs: Mapping[str, Any], stats: Mapping[str, tuple[float, float]], taste: bool
) -> list[Any]:
    """Keras tensors for the entity's features in ``names``, in spec order.

    Numerics: log1p where the spec says so, then normalised, except the taste shares, which are
    already comparable fractions. Categoricals: hashed and embedded.
    """
    import keras

    signed_log1p = _layers()
    parts = []
    for feature in spec.features_of(entity, "numeric"):
        if feature.name not in names:
            continue
        x = keras.layers.Reshape((1,), name=f"{feature.name}_column")(inputs[feature.name])
        if feature.transform == "log1p":
            x = signed_log1p(name=f"{feature.name}_log1p")(x)
        if not taste:
            mean, variance = stats[feature.name]
            x = keras.layers.Normalization(mean=mean, variance=variance, name=f"{feature.name}_norm")(x)
        parts.append(x)
    for feature in spec.features_of(entity, "categorical"):
        if feature.name not in names:
            continue
        hashed = keras.layers.Hashing(num_bins=HASH_BINS, name=f"{feature.name}_hash")(inputs[feature.name])
        embedded = keras.layers.Embedding(HASH_BINS, CATEGORY_DIM, name=f"{feature.name}_embedding")(hashed)
        parts.append(keras.layers.Reshape((CATEGORY_DIM,), name=f"{feature.name}_vector")(embedded))
    return parts


def _joined(parts: list[Any], name: str) -> Any:
    import keras

    return keras.layers.Concatenate(name=name)(parts) if len(parts) > 1 else parts[0]


def _encoder(
    entity: str, inputs: Mapping[str, Any], stats: Mapping[str, tuple[float, float]], config: ModelConfig
) -> tuple[Any, Any]:
    """``{entity}_features`` (taste then activity) and its taste part."""
    import keras

    names = {f.name for f in spec.features_of(entity)}
    taste_names = set(TASTE_FEATURES[entity])
    taste_in = _joined(_inputs_of(entity, taste_names, inputs, stats, taste=True), f"{entity}_taste_inputs")
    taste = keras.layers.Dense(TASTE_DIM, name=f"{entity}_taste")(taste_in)
    x = _joined(_inputs_of(entity, names - taste_names, inputs, stats, taste=False), f"{entity}_inputs")
    x = keras.layers.Dense(config.hidden_units, activation="relu", name=f"{entity}_hidden")(x)
    x = keras.layers.Dropout(config.dropout, name=f"{entity}_dropout")(x)
    activity = keras.layers.Dense(config.embedding_dim - TASTE_DIM, name=f"{entity}_activity")(x)
    return keras.layers.Concatenate(name=f"{entity}_features")([taste, activity]), taste


def build_model(stats: Mapping[str, tuple[float, float]], config: ModelConfig | None = None) -> "keras.Model":
    """The compiled model. Build it inside a ``tf.distribute`` strategy's scope when distributing."""
    import keras

    config = config or ModelConfig()
    inputs = {
        f.name: keras.Input(shape=(), dtype="float32" if f.kind == "numeric" else "string", name=f.name)
        for f in spec.FEATURES
    }
    if config.embedding_dim <= TASTE_DIM:
        raise ValueError(f"embedding_dim must exceed the taste part ({TASTE_DIM}), got {config.embedding_dim}")
    customer, customer_taste = _encoder("customer", inputs, stats, config)
    product, product_taste = _encoder("product", inputs, stats, config)
    pair_names = {f.name for f in spec.features_of("pair")}
    pair = _joined(_inputs_of("pair", pair_names, inputs, stats, taste=False), "pair_inputs")
    match = keras.layers.Dot(axes=1, name="taste_match")([customer_taste, product_taste])
    interaction = keras.layers.Multiply(name="interaction")([customer, product])
    difference = keras.layers.Subtract(name="difference")([customer, product])
    x = keras.layers.Concatenate(name="comparator_inputs")([customer, product, interaction, difference, pair])
    x = keras.layers.Dense(config.hidden_units, activation="relu", name="comparator_hidden")(x)
    preference = keras.layers.Dense(config.embedding_dim, activation="relu", name="preference")(x)
    logit = keras.layers.Dense(1, name="preference_logit")(preference)
    propensity = keras.layers.Activation("sigmoid", name="propensity")(keras.layers.Add(name="logit")([logit, match]))
    model = keras.Model(inputs=inputs, outputs=propensity, name="preference_model")
    model.compile(
        optimizer=keras.optimizers.Adam(config.learning_rate),
        loss=keras.losses.BinaryCrossentropy(),
        metrics=[keras.metrics.AUC(name="auc")],
    )
    return model
