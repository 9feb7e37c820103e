"""Grad-CAM (Selvaraju et al., 2017): where in its input the network found a class.

Target layer: ``conv_7b_ac``, the activation after the last convolution (8x8x1536), the
last convolutional block and the standard Grad-CAM target for this network: the deepest
map that still has a spatial layout. Score: the class's logit, the score before the
softmax, as the paper does (the softmax's gradient would mix in every other class).

With A the 8x8x1536 activations and y the logit, each channel's weight is the spatial
mean of dy/dA, and the heatmap is ReLU(sum over channels of weight * A), divided by its
maximum: values in [0, 1], cell (i, j) the square the network sees at rows i/8..(i+1)/8
and columns j/8..(j+1)/8 of its 299x299 input. A map with no positive cell is all zero.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import WeightsError
from ..spec import SPEC
from .h5weights import load_weights, weights_include_top
from .model import build_model
from .quiet import keras, tensorflow

TARGET_LAYER = "conv_7b_ac"
ACTIVATIONS, LOGITS = "activations", "logits"


@dataclass(frozen=True)
class GradCam:
    """One input's Grad-CAM: the 8x8 heatmap in [0, 1] for ``class_index``, and the
    input's class probabilities (1000,) from the same forward pass."""

    heatmap: np.ndarray
    class_index: int
    probabilities: np.ndarray


def load_explainer(weights: str | Path) -> keras.Model:
    """The network with ``weights`` (full weights: the classifier is needed), its output a
    dict: ``{"activations": conv_7b_ac (N, 8, 8, 1536), "logits": (N, 1000)}``."""
    if not weights_include_top(weights):
        raise WeightsError(f"{weights}: holds the feature extractor only (no classifier); "
                           "Grad-CAM needs the full weights.")
    network = build_model(classifier_activation=None)
    load_weights(network, weights)
    outputs = {ACTIVATIONS: network.get_layer(TARGET_LAYER).output, LOGITS: network.output}
    return keras.Model(network.input, outputs, name=network.name)


class Explainer:
    """Grad-CAM through ``load_explainer``'s model. ``traced``: the forward and backward
    pass is traced into a TensorFlow graph on first use, which costs more than one eager
    pass (about 10 s against 4 s on two CPU cores) and makes every later one about ten
    times faster: worth it from a few images on."""

    def __init__(self, model: keras.Model, traced: bool = False):
        self.model = model
        self._step = tensorflow.function(self._gradients) if traced else self._gradients

    @classmethod
    def from_weights(cls, weights: str | Path, traced: bool = False) -> Explainer:
        return cls(load_explainer(weights), traced)

    def _gradients(self, batch, class_index):
        """Activations, the score's gradients, the logits and the class (-1: the top)."""
        with tensorflow.GradientTape() as tape:
            outputs = self.model(batch, training=False)
            logits = outputs[LOGITS][0]
            class_index = tensorflow.where(
                class_index < 0, tensorflow.argmax(logits, output_type=tensorflow.int32),
                class_index)
            score = logits[class_index]
        gradients = tape.gradient(score, outputs[ACTIVATIONS])
        return outputs[ACTIVATIONS][0], gradients[0], logits, class_index

    def explain(self, inputs: np.ndarray, class_index: int | None = None) -> GradCam:
        """Grad-CAM of one preprocessed input (299x299x3 in [-1, 1]) for ``class_index``
        (default: the most probable class)."""
        size = SPEC.input_size
        batch = tensorflow.constant(np.asarray(inputs, np.float32).reshape(1, size, size, 3))
        wanted = tensorflow.constant(-1 if class_index is None else class_index, tensorflow.int32)
        activations, gradients, logits, chosen = self._step(batch, wanted)
        channel_weights = tensorflow.reduce_mean(gradients, axis=(0, 1))
        cam = tensorflow.nn.relu(tensorflow.reduce_sum(activations * channel_weights, axis=-1))
        return GradCam(_normalized(cam.numpy()), int(chosen),
                       tensorflow.nn.softmax(logits).numpy())


def _normalized(cam: np.ndarray) -> np.ndarray:
    """``cam`` divided by its maximum, or all zero when it has no positive value."""
    peak = cam.max()
    return (cam / peak if peak > 0 else np.zeros_like(cam)).astype(np.float32)
