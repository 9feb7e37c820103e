"""One trunk, named heads: the network loaded from a weights file, its outputs by name.

``features`` is the global average pooling of the last convolution (Keras's ``avg_pool``,
1536-d), the input of the classifier; ``probabilities`` (1000-d) is there only when the
file holds the classifier too. A notop file gives the feature extractor alone.
"""

from __future__ import annotations

from pathlib import Path

from ..spec import FEATURES, PROBABILITIES
from .h5weights import load_weights, weights_include_top
from .model import build_model
from .quiet import keras


def load_named_outputs(weights: str | Path) -> keras.Model:
    """The network with ``weights`` loaded (full or notop, as the file is), its output a
    dict: ``{"probabilities", "features"}``, or ``{"features"}`` for notop weights."""
    include_top = weights_include_top(weights)
    network = build_model(include_top=include_top, pooling=None if include_top else "avg")
    load_weights(network, weights)
    if include_top:
        outputs = {PROBABILITIES: network.output,
                   FEATURES: network.get_layer("avg_pool").output}
    else:
        outputs = {FEATURES: network.output}
    return keras.Model(network.input, outputs, name=network.name)
