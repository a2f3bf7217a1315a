"""The preference model (Keras 3 functional API), built from the feature spec.

* customer encoder: the customer's numeric features (log1p where the spec says so, then
  normalised with statistics of the training data) and hashed categoricals -> ``customer_features``;
* product encoder: the same for the product -> ``product_features``;
* comparator: both embeddings, their element-wise product and difference, and the pair features
  -> ``preference`` (the preference tensor);
* predictor: a sigmoid over the preference -> ``propensity``.

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

HASH_BINS = 256
CATEGORY_DIM = 8


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


def _encoder(
    entity: str,
    inputs: Mapping[str, Any],
    stats: Mapping[str, tuple[float, float]],
    config: ModelConfig,
    output_name: str | None,
) -> Any:
    import keras

    signed_log1p = _layers()
    parts = []
    for feature in spec.features_of(entity, "numeric"):
        x = keras.layers.Reshape((1,), name=f"{feature.name}_column")(inputs[feature.name])
        if feature.transform == "log1p":
            x = signed_log1p(name=f"{feature.name}_log1p")(x)
        mean, variance = stats[feature.name]
        parts.append(keras.layers.Normalization(mean=mean, variance=variance, name=f"{feature.name}_norm")(x))
    for feature in spec.features_of(entity, "categorical"):
        hashed = keras.layers.Hashing(num_bins=HASH_BINS, name=f"{feature.name}_hash")(inputs[feature.name])
        embedded = keras.layers.Embedding(HASH_BINS, CATEGORY_DIM, name=f"{feature.name}_embedding")(hashed)
        parts.append(keras.layers.Reshape((CATEGORY_DIM,), name=f"{feature.name}_vector")(embedded))
    x = keras.layers.Concatenate(name=f"{entity}_inputs")(parts)
    if output_name is None:  # pair features go straight to the comparator
        return x
    x = keras.layers.Dense(config.hidden_units, activation="relu", name=f"{entity}_hidden")(x)
    x = keras.layers.Dropout(config.dropout, name=f"{entity}_dropout")(x)
    return keras.layers.Dense(config.embedding_dim, name=output_name)(x)


def build_model(stats: Mapping[str, tuple[float, float]], config: ModelConfig | None = None) -> "keras.Model":
    """The compiled model. Build it inside a ``tf.distribute`` strategy's scope when distributing."""
    import keras

    config = config or ModelConfig()
    inputs = {
        f.name: keras.Input(shape=(), dtype="float32" if f.kind == "numeric" else "string", name=f.name)
        for f in spec.FEATURES
    }
    customer = _encoder("customer", inputs, stats, config, "customer_features")
    product = _encoder("product", inputs, stats, config, "product_features")
    pair = _encoder("pair", inputs, stats, config, None)
    interaction = keras.layers.Multiply(name="interaction")([customer, product])
    difference = keras.layers.Subtract(name="difference")([customer, product])
    x = keras.layers.Concatenate(name="comparator_inputs")([customer, product, interaction, difference, pair])
    x = keras.layers.Dense(config.hidden_units, activation="relu", name="comparator_hidden")(x)
    preference = keras.layers.Dense(config.embedding_dim, activation="relu", name="preference")(x)
    propensity = keras.layers.Dense(1, activation="sigmoid", name="propensity")(preference)
    model = keras.Model(inputs=inputs, outputs=propensity, name="preference_model")
    model.compile(
        optimizer=keras.optimizers.Adam(config.learning_rate),
        loss=keras.losses.BinaryCrossentropy(),
        metrics=[keras.metrics.AUC(name="auc")],
    )
    return model
