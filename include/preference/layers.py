"""The model's custom layer, registered with Keras when this module is imported.

Kept apart from ``model.py`` so that loading a saved model needs only this import (see
:func:`include.preference.model.load_model`).
"""

from __future__ import annotations

from typing import Any

import keras


@keras.saving.register_keras_serializable(package="preference")
class SignedLog1p(keras.layers.Layer):
    """sign(x) * log1p(|x|): tames counts and amounts with heavy right tails."""

    def call(self, inputs: Any) -> Any:
        return keras.ops.sign(inputs) * keras.ops.log1p(keras.ops.abs(inputs))


@keras.saving.register_keras_serializable(package="preference")
class BlockMeanSquaredError(keras.layers.Layer):
    """An autoencoder's per-row error, shape (rows, 1): the mean squared error within each block of
    consecutive columns, averaged over the blocks (each block weighs the same, however many
    columns it has). Called on ``[target, reconstruction]``; ``blocks``: the blocks' widths."""

    def __init__(self, blocks: list[int], **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.blocks = [int(b) for b in blocks]

    def call(self, inputs: Any) -> Any:
        target, reconstruction = inputs
        squared = keras.ops.square(target - reconstruction)
        parts, start = [], 0
        for width in self.blocks:
            parts.append(keras.ops.mean(squared[:, start : start + width], axis=-1, keepdims=True))
            start += width
        return sum(parts[1:], parts[0]) / float(len(parts))

    def compute_output_shape(self, input_shape: Any) -> Any:
        return (*input_shape[0][:-1], 1)

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "blocks": self.blocks}


@keras.saving.register_keras_serializable(package="preference")
def predicted_error(_: Any, error: Any) -> Any:
    """A loss for a model whose output is its own per-row error (the autoencoder): that error."""
    return keras.ops.mean(error)
