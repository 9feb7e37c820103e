"""irv2cli: Inception-ResNet-V2 ImageNet classification, as a library and the ``irv2`` command.

Heavy modules (TensorFlow, Keras) load on first use, so ``import irv2cli`` stays fast.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

__version__ = "0.1.0"

_EXPORTS = {
    "build_model": "model",
    "load_weights": "h5weights",
    "Classifier": "classifier",
    "Record": "classifier",
    "Prediction": "labels",
    "ensure_weights": "weights",
    "SPEC": "spec",
}
__all__ = ["SPEC", "Classifier", "Prediction", "Record", "__version__", "build_model",
           "ensure_weights", "load_weights"]

if TYPE_CHECKING:
    from .classifier import Classifier, Record
    from .h5weights import load_weights
    from .labels import Prediction
    from .model import build_model
    from .spec import SPEC
    from .weights import ensure_weights


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
