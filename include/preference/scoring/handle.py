"""A picklable handle on a saved model: Spark ships the handle, each worker loads the model once.

A Keras model does not pickle (and should not travel in a closure), so the driver broadcasts only
where the model lives (a ``.keras`` file or an MLflow URI) and the registry version it stands for.
Each Python worker loads the model on first use and keeps it for the following Arrow batches.
"""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from include.preference.features import spec

if TYPE_CHECKING:
    import keras
    import pyarrow as pa

ENTITIES = ("customer", "product")
_CACHE: dict[tuple[str, str], Any] = {}
_LOCK = threading.RLock()


@dataclass(frozen=True)
class ModelHandle:
    """Where a model lives and which version it is.

    Attributes:
        uri: a ``.keras`` file visible to every worker, or an MLflow model URI
            (``models:/name/3``); MLflow URIs are resolved against ``tracking_uri``.
        version: the registry version recorded on every scored row (``local`` for a file).
        tracking_uri: the MLflow server, for ``models:/`` and ``runs:/`` URIs.
        threads: TensorFlow threads per process. Spark runs one Python worker per core, so one
            thread each avoids oversubscribing the cores (0: TensorFlow's default).
    """

    uri: str
    version: str
    tracking_uri: str = ""
    name: str = field(default="", compare=False)
    threads: int = 1

    def model(self) -> "keras.Model":
        """The full model (loaded once per process)."""
        return self._cached("model", self._load)

    def encoder(self, entity: str) -> "keras.Model":
        """The sub-model from the entity's raw features to its embedding layer (``<entity>_features``)."""
        if entity not in ENTITIES:
            raise ValueError(f"unknown entity {entity!r}; expected one of {', '.join(ENTITIES)}")
        return self._cached(entity, lambda: encoder_of(self.model(), entity))

    def profiler(self) -> "keras.Model":
        """For a customer profile model: features -> ``[customer_profile, reconstruction_error]``."""
        from include.preference.profiles import profile_encoder

        return self._cached("profile", lambda: profile_encoder(self.model()))

    def _cached(self, part: str, build: Any) -> Any:
        key = (self.uri, part)
        with _LOCK:
            if key not in _CACHE:
                _CACHE[key] = build()
            return _CACHE[key]

    def _load(self) -> "keras.Model":
        from include.preference.model import load_model

        if self.tracking_uri and self.uri.startswith(("models:/", "runs:/")):
            import mlflow

            mlflow.set_tracking_uri(self.tracking_uri)
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
        if self.threads:
            import tensorflow as tf

            try:
                tf.config.threading.set_intra_op_parallelism_threads(self.threads)
                tf.config.threading.set_inter_op_parallelism_threads(self.threads)
            except RuntimeError:  # TensorFlow already started in this process: keep its pools
                pass
        return load_model(self.uri)


def encoder_of(model: "keras.Model", entity: str) -> "keras.Model":
    """A model from one entity's feature inputs to its ``<entity>_features`` layer (shared weights)."""
    import keras

    inputs = {f.name: model.input[f.name] for f in spec.features_of(entity)}
    return keras.Model(inputs=inputs, outputs=model.get_layer(f"{entity}_features").output, name=f"{entity}_encoder")


def feature_arrays(batch: "pa.RecordBatch | pa.Table", names: Any) -> dict[str, np.ndarray]:
    """Model inputs from Arrow columns: float32 numerics, object arrays of strings for categoricals."""
    out = {}
    for name in names:
        column = batch.column(name)
        if spec.BY_NAME[name].kind == "numeric":
            out[name] = column.to_numpy(zero_copy_only=False).astype(np.float32, copy=False)
        else:
            out[name] = column.to_numpy(zero_copy_only=False).astype(object, copy=False)
    return out


def embed(handle: ModelHandle, entity: str, batch: "pa.RecordBatch | pa.Table") -> np.ndarray:
    """``rows x embedding_dim`` float32 embeddings of the batch's rows."""
    names = [f.name for f in spec.features_of(entity)]
    if batch.num_rows == 0:
        return np.zeros((0, 0), dtype=np.float32)
    out = handle.encoder(entity).predict_on_batch(feature_arrays(batch, names))
    return np.asarray(out, dtype=np.float32)


def propensity(handle: ModelHandle, batch: "pa.RecordBatch | pa.Table") -> np.ndarray:
    """The full model's propensity for each (customer, product) row of the batch."""
    if batch.num_rows == 0:
        return np.zeros(0, dtype=np.float32)
    out = handle.model().predict_on_batch(feature_arrays(batch, spec.BY_NAME))
    return np.asarray(out, dtype=np.float32).reshape(-1)


def profile(handle: ModelHandle, batch: "pa.RecordBatch | pa.Table") -> tuple[np.ndarray, np.ndarray]:
    """(``rows x PROFILE_DIM`` profiles, reconstruction errors) of a batch of customer feature rows."""
    from include.preference.profiles import PROFILE_DIM, PROFILE_FEATURES

    if batch.num_rows == 0:
        return np.zeros((0, PROFILE_DIM), dtype=np.float32), np.zeros(0, dtype=np.float32)
    vectors, errors = handle.profiler().predict_on_batch(feature_arrays(batch, PROFILE_FEATURES))
    return np.asarray(vectors, dtype=np.float32), np.asarray(errors, dtype=np.float32).reshape(-1)
