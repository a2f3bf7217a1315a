"""The customer profile: an autoencoder over the customer features, apart from any ranking model.

The preference model's customer embedding is trained to rank products; this profile is trained to
*describe* a customer: the customer's features (the feature spec's customer features, through the
same preprocessing as the preference model's customer encoder) are compressed into
``PROFILE_DIM`` numbers (``customer_profile``) and decoded back. The reconstruction target has two
blocks, which weigh the same in the error:

* *what* the customer buys: the category shares (the encoder's taste inputs, a composition that sums
  to one), centred, and scaled as one block so that a share keeps its size against the others;
* *how* the customer buys: every other numeric feature, log1p where the spec says so and normalised
  with statistics of the training rows (the encoder's activity inputs).

Weighing columns alike instead would let the 37 strongly correlated activity columns drown the
shares, and the profile would describe how much a customer buys and little of what. The target is
made by fixed layers (it cannot drift towards what is easy to reconstruct); the categoricals
(hashed and embedded) are inputs only.

The saved model takes the raw customer feature columns and outputs ``reconstruction_error`` (one
number per customer): training minimises it, a high value flags a customer unlike the ones trained
on (an outlier signal). :func:`profile_encoder` gives both the profile and the error from one pass.
No per-id weight: a customer never seen in training gets a profile from its features, whatever
ranking model is champion.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import numpy as np

from include.preference.features import spec
from include.preference.model import TASTE_FEATURES, ModelConfig, _inputs_of, _joined, _layers

if TYPE_CHECKING:
    import keras

PROFILE_DIM = 8
PROFILE = "customer_profile"
TARGET = "profile_target"
ERROR = "reconstruction_error"
PROFILE_FEATURES = tuple(f.name for f in spec.features_of("customer"))
# The target's two blocks, in order: what the customer buys (shares), how (every other numeric).
SHARE_TARGETS = TASTE_FEATURES["customer"]
ACTIVITY_TARGETS = tuple(f.name for f in spec.features_of("customer", "numeric") if f.name not in SHARE_TARGETS)
BLOCKS = (len(SHARE_TARGETS), len(ACTIVITY_TARGETS))


def _share_block(inputs: Mapping[str, Any], stats: Mapping[str, tuple[float, float]]) -> Any:
    """The shares as the encoder's taste part takes them, centred and scaled by one block-wide
    deviation (the root of the columns' mean variance), so their proportions are kept."""
    import keras

    shares = _joined(_inputs_of("customer", set(SHARE_TARGETS), inputs, stats, taste=True), "profile_shares")
    means = [stats[name][0] for name in SHARE_TARGETS]
    spread = max(float(np.mean([stats[name][1] for name in SHARE_TARGETS])), 1e-6)
    return keras.layers.Normalization(mean=means, variance=[spread] * len(means), name="profile_shares_norm")(shares)


def build_profile_model(stats: Mapping[str, tuple[float, float]], config: ModelConfig | None = None) -> "keras.Model":
    """The compiled autoencoder: customer feature columns in, the per-row reconstruction error out.

    ``config``: its ``hidden_units`` and ``learning_rate`` (the profile has ``PROFILE_DIM`` numbers).
    Build it inside a ``tf.distribute`` strategy's scope when distributing.
    """
    import keras

    from include.preference.layers import BlockMeanSquaredError, predicted_error

    config = config or ModelConfig()
    inputs = {
        f.name: keras.Input(shape=(), dtype="float32" if f.kind == "numeric" else "string", name=f.name)
        for f in spec.features_of("customer")
    }
    categorical = {f.name for f in spec.features_of("customer", "categorical")}
    activity = _joined(_inputs_of("customer", set(ACTIVITY_TARGETS), inputs, stats, taste=False), "profile_activity")
    target = keras.layers.Concatenate(name=TARGET)([_share_block(inputs, stats), activity])
    context = _inputs_of("customer", categorical, inputs, stats, taste=False)
    x = keras.layers.Concatenate(name="profile_inputs")([target, *context]) if context else target
    x = keras.layers.Dense(config.hidden_units, activation="relu", name="profile_encoder_hidden")(x)
    profile = keras.layers.Dense(PROFILE_DIM, name=PROFILE)(x)
    x = keras.layers.Dense(config.hidden_units, activation="relu", name="profile_decoder_hidden")(profile)
    reconstruction = keras.layers.Dense(sum(BLOCKS), name="reconstruction")(x)
    error = BlockMeanSquaredError(list(BLOCKS), name=ERROR)([target, reconstruction])
    model = keras.Model(inputs=inputs, outputs=error, name="customer_profile_model")
    # Trained by the project's loop on the error itself; compile gives it its optimizer (and a loss
    # for Keras' own fit: the error, whatever the labels).
    model.compile(optimizer=keras.optimizers.Adam(config.learning_rate), loss=predicted_error)
    return model


def block_error(target: np.ndarray, reconstruction: np.ndarray) -> np.ndarray:
    """The model's error (see ``BlockMeanSquaredError``) in numpy: per row, the blocks' mean squared
    errors averaged."""
    squared = np.square(np.asarray(target, np.float64) - np.asarray(reconstruction, np.float64))
    edges = np.cumsum((0, *BLOCKS))
    return np.mean([squared[:, a:b].mean(axis=1) for a, b in zip(edges[:-1], edges[1:], strict=True)], axis=0)


def profile_encoder(model: "keras.Model") -> "keras.Model":
    """A model from the customer features to ``[customer_profile, reconstruction_error]`` (shared weights)."""
    import keras

    _layers()
    return keras.Model(
        inputs=model.input,
        outputs=[model.get_layer(PROFILE).output, model.get_layer(ERROR).output],
        name="customer_profile_encoder",
    )


def target_model(model: "keras.Model") -> "keras.Model":
    """A model from the customer features to the reconstruction target (the two blocks)."""
    import keras

    return keras.Model(inputs=model.input, outputs=model.get_layer(TARGET).output, name="customer_profile_target")


def columns_of(frame: Any) -> dict[str, np.ndarray]:
    """The profile model's inputs from a table (pandas) holding at least the customer features."""
    return {name: frame[name].to_numpy() for name in PROFILE_FEATURES}


def profiles_of(model: "keras.Model", frame: Any) -> tuple[np.ndarray, np.ndarray]:
    """(profiles ``rows x PROFILE_DIM``, reconstruction errors) of a table's rows."""
    if not len(frame):
        return np.zeros((0, PROFILE_DIM), np.float32), np.zeros(0, np.float32)
    profile, error = profile_encoder(model).predict(columns_of(frame), batch_size=8192, verbose=0)
    return np.asarray(profile, np.float32), np.asarray(error, np.float32).reshape(-1)


def mean_profile_error(model: "keras.Model", evaluated: Any, reference: Any) -> dict[str, float]:
    """The autoencoder's mean reconstruction error over ``evaluated``'s rows, and the error of the
    obvious alternative: every row reconstructed as the mean target of ``reference`` (training rows).

    An autoencoder that does not beat the mean has learnt nothing about its customers.
    """
    _, errors = profiles_of(model, evaluated)
    targets = target_model(model)
    mean = np.asarray(targets.predict(columns_of(reference), batch_size=8192, verbose=0), np.float64).mean(axis=0)
    evaluated_target = np.asarray(targets.predict(columns_of(evaluated), batch_size=8192, verbose=0), np.float64)
    baseline = float(block_error(evaluated_target, np.broadcast_to(mean, evaluated_target.shape)).mean())
    return {"reconstruction_error": float(errors.mean()), "mean_profile_error": baseline, "customers": len(errors)}


def profile_signature() -> Any:
    """The MLflow signature: the customer feature columns in, the reconstruction error out."""
    from mlflow.models.signature import ModelSignature
    from mlflow.types.schema import Schema, TensorSpec

    inputs = Schema(
        [
            TensorSpec(np.dtype("float32" if f.kind == "numeric" else "object"), (-1,), f.name)
            for f in spec.features_of("customer")
        ]
    )
    return ModelSignature(inputs=inputs, outputs=Schema([TensorSpec(np.dtype("float32"), (-1, 1), ERROR)]))
