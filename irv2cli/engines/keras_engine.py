"""The reference engine: the Keras network itself. The one engine that imports TensorFlow."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..network.heads import load_named_outputs
from ..network.quiet import tensorflow as tf


class KerasEngine:
    """The Keras model with named outputs (see ``network.heads``), called through one
    traced function.

    The function is traced once for any batch size, so neither a new batch size nor a
    last short batch triggers a retrace.
    """

    def __init__(self, weights: str | Path):
        self.model = load_named_outputs(weights)
        self.outputs = tuple(self.model.output)
        size = self.model.input_shape[1:]
        self._forward = tf.function(
            lambda x: self.model(x, training=False),
            input_signature=[tf.TensorSpec((None, *size), tf.float32)],
        )

    def __call__(self, batch: np.ndarray) -> dict[str, np.ndarray]:
        return {name: value.numpy() for name, value in self._forward(batch).items()}
