"""irv2cli: Inception-ResNet-V2 ImageNet classification, as a library and the ``irv2`` command.

Heavy modules (TensorFlow, Keras) load on first use, so ``import irv2cli`` stays fast.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

from .version import __version__

_EXPORTS = {
    "build_model": "network.model",
    "load_weights": "network.h5weights",
    "Classifier": "pipeline.classifier",
    "Record": "results.records",
    "Prediction": "results.labels",
    "ensure_weights": "store.weights",
    "SPEC": "spec",
}
__all__ = ["SPEC", "Classifier", "Prediction", "Record", "__version__", "build_model",
           "ensure_weights", "load_weights"]

if TYPE_CHECKING:
    from .network.h5weights import load_weights
    from .network.model import build_model
    from .pipeline.classifier import Classifier
    from .results.labels import Prediction
    from .results.records import Record
    from .spec import SPEC
    from .store.weights import ensure_weights


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
