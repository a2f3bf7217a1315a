"""The model built from the feature spec: named embedding layers, raw columns in, save and reload."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from include.preference.features import spec
from include.preference.model import build_model, feature_statistics, transformed

pytestmark = pytest.mark.unit


def columns(count: int, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    data: dict[str, np.ndarray] = {}
    for feature in spec.FEATURES:
        if feature.kind == "numeric":
            data[feature.name] = rng.poisson(2.0, count).astype("float32")
        else:
            data[feature.name] = np.array([f"v{i}" for i in rng.integers(0, 5, count)], dtype=object)
    return data


def test_log1p_features_are_transformed_and_others_kept():
    values = np.array([0.0, 1.0, 9.0, -3.0])
    np.testing.assert_allclose(transformed("customer_views_7d", values), np.sign(values) * np.log1p(np.abs(values)))
    np.testing.assert_array_equal(transformed("customer_conversion_7d", values), values)


def test_model_takes_raw_columns_exposes_both_embeddings_and_survives_save_and_load(tmp_path: Path):
    import keras

    data = columns(64)
    model = build_model(feature_statistics(data))
    assert {"customer_features", "product_features", "preference", "propensity"} <= {
        layer.name for layer in model.layers
    }
    scores = model.predict(data, verbose=0)
    assert scores.shape == (64, 1) and ((scores > 0) & (scores < 1)).all()
    path = tmp_path / "model.keras"
    model.save(path)
    again = keras.saving.load_model(path)
    np.testing.assert_allclose(again.predict(data, verbose=0), scores, rtol=1e-5)
    encoder = keras.Model(model.inputs, model.get_layer("customer_features").output)
    customer_only = {k: v.copy() for k, v in data.items()}
    for name in spec.numeric_names("product"):
        customer_only[name] = np.zeros(64, dtype="float32")  # product inputs do not move the customer side
    np.testing.assert_allclose(encoder.predict(customer_only, verbose=0), encoder.predict(data, verbose=0), rtol=1e-6)
