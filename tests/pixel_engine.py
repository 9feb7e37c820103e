"""An engine for tests whose subject is files, folders, resume and faults rather than the
network: it implements the engine protocol in memory and answers at once."""

from __future__ import annotations

import numpy as np

from irv2cli.spec import FEATURES, PROBABILITIES, SPEC

STRIDE = 37  # every 37th pixel of 299: a 9x9 grid of each image's colours


class PixelEngine:
    """The network's two outputs made from each image's coarse colours by fixed random
    projections: deterministic, different for different images (so top-k differ as
    with the network), finite, and computed in microseconds. It says nothing about
    what an image shows."""

    outputs = (PROBABILITIES, FEATURES)

    def __init__(self, seed: int = 0):
        rng = np.random.default_rng(seed)
        cells = len(range(0, SPEC.input_size, STRIDE)) ** 2 * 3
        self.to_features = rng.standard_normal((cells, SPEC.feature_dim)).astype(np.float32)
        self.to_logits = (rng.standard_normal((SPEC.feature_dim, SPEC.num_classes)) / 8
                          ).astype(np.float32)

    def __call__(self, batch: np.ndarray) -> dict[str, np.ndarray]:
        colours = np.asarray(batch, np.float32)[:, ::STRIDE, ::STRIDE, :].reshape(len(batch), -1)
        features = np.maximum(colours @ self.to_features, 0)
        logits = features @ self.to_logits
        exp = np.exp(logits - logits.max(axis=1, keepdims=True))
        return {PROBABILITIES: exp / exp.sum(axis=1, keepdims=True), FEATURES: features}
