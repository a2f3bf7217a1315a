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
