"""Engines run the network: a float32 batch (N, 299, 299, 3) in [-1, 1] -> probabilities."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Protocol

import numpy as np

from ..errors import EngineError
from ..spec import BACKENDS


class Engine(Protocol):
    """Anything that maps a preprocessed batch to class probabilities (N, 1000)."""

    def __call__(self, batch: np.ndarray) -> np.ndarray: ...


class KerasEngine:
    """The reference: the Keras model, called through one traced function.

    The function is traced once for any batch size, so neither a new batch size nor a
    last short batch triggers a retrace.
    """

    def __init__(self, weights: str | Path):
        import tensorflow as tf

        from ..network.h5weights import load_weights
        from ..network.model import build_model

        self.model = build_model()
        load_weights(self.model, weights)
        size = self.model.input_shape[1:]
        self._forward = tf.function(
            lambda x: self.model(x, training=False),
            input_signature=[tf.TensorSpec((None, *size), tf.float32)],
        )

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        return self._forward(batch).numpy()


def finite_scores(probabilities: np.ndarray) -> np.ndarray:
    """``probabilities``, if all are finite: NaN or infinity means the engine is broken."""
    if not np.isfinite(probabilities).all():
        from ..store.weights import cache_dir

        raise EngineError(
            f"the engine returned NaN or infinite scores for a batch of {len(probabilities)} "
            "images, so none was recorded: the weights, or the fast runtime built from them, "
            "are broken (not the images). Check the weights file, or delete "
            f"{cache_dir() / 'runtime'} so that the fast runtime is rebuilt.")
    return probabilities


def load_engine(weights: str | Path, backend: str = "auto",
                notify: Callable[[str], None] = lambda message: None) -> Engine:
    """The engine for ``weights``: ``onnx`` (ONNX Runtime on a cached artifact, built on
    first use), ``keras`` (the reference), or ``auto``, which is ``onnx``."""
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, not {backend!r}")
    if backend == "keras":
        return KerasEngine(weights)
    from .onnx_runtime import load_onnx_engine

    return load_onnx_engine(Path(weights), notify)
