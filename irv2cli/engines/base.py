"""Engines run the network: a float32 batch (N, 299, 299, 3) in [-1, 1] -> named outputs."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Protocol

import numpy as np

from ..errors import EngineError, Hint
from ..spec import BACKENDS, PRECISIONS, PROBABILITIES

Outputs = dict[str, np.ndarray]


class Engine(Protocol):
    """Anything that maps a preprocessed batch to its named outputs: ``probabilities``
    (N, 1000) and ``features`` (N, 1536), or ``features`` alone for notop weights.
    ``outputs`` names what it gives."""

    outputs: tuple[str, ...]

    def __call__(self, batch: np.ndarray) -> Outputs: ...


def finite_scores(outputs: Outputs) -> Outputs:
    """``outputs``, if all are finite: NaN or infinity means the engine is broken."""
    for name, values in outputs.items():
        if not np.isfinite(values).all():
            from ..store.weights import cache_dir

            raise EngineError(
                f"the engine returned NaN or infinite scores ({name}) for a batch of "
                f"{len(values)} images, so none was recorded: the weights, or the fast runtime "
                "built from them, are broken (not the images). Check the weights file, or "
                f"delete {cache_dir() / 'runtime'} so that the fast runtime is rebuilt.")
    return outputs


def check_outputs(available: Iterable[str], wanted: Iterable[str],
                  weights: str | os.PathLike | None = None) -> None:
    """``EngineError`` unless every output ``wanted`` is ``available``: notop weights
    (``weights``, if known) give features, not probabilities."""
    if set(wanted) - set(available):
        source = f"{weights}: " if weights is not None else ""
        raise EngineError(f"{source}these are feature-extractor (notop) weights: they give "
                          "features, not classes", Hint.FEATURES_ONLY)


def class_probabilities(outputs: Outputs) -> np.ndarray:
    """The class probabilities among an engine's ``outputs``, checked by ``finite_scores``;
    ``EngineError`` if there are none (notop weights)."""
    check_outputs(outputs, (PROBABILITIES,))
    return finite_scores(outputs)[PROBABILITIES]


def load_engine(weights: str | Path, backend: str = "auto",
                notify: Callable[[str], None] = lambda message: None,
                precision: str = "fp32") -> Engine:
    """The engine for ``weights``: ``onnx`` (ONNX Runtime on a cached artifact, built on
    first use), ``keras`` (the reference), or ``auto``, which is ``onnx``. ``precision``
    ``int8`` is ONNX Runtime on the int8 artifact, which must have been built first
    (``pipeline.quantize``)."""
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, not {backend!r}")
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, not {precision!r}")
    if backend == "keras" and precision == "int8":
        raise ValueError("the Keras reference computes in fp32 only; int8 runs on onnx")
    if backend == "keras":
        from .keras_engine import KerasEngine

        return KerasEngine(weights)
    if precision == "int8":
        from .int8 import load_int8_engine

        return load_int8_engine(Path(weights), notify)
    from .onnx_runtime import load_onnx_engine

    return load_onnx_engine(Path(weights), notify)
