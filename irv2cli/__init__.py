"""irv2cli: Inception-ResNet-V2 ImageNet classification and features, as a library and the
``irv2`` command.

>>> from irv2cli import RunOptions, run
>>> run(["photos/"], "labels.csv", RunOptions(top_k=3))    # a folder into a results file
>>> from irv2cli import Classifier
>>> Classifier.from_weights().classify(["cat.jpg"])          # records, one per file
>>> from irv2cli import explain
>>> explain(["cat.jpg"], "cam.png")                          # a Grad-CAM heatmap

Heavy modules (TensorFlow, Keras, ONNX Runtime) load on first use, so ``import irv2cli``
stays fast.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

from .errors import (
    CalibrationError,
    ClusterError,
    DownloadError,
    EngineError,
    ExportError,
    HeadError,
    Hint,
    ImageError,
    Irv2Error,
    OutputError,
    ServeError,
    TrainingDataError,
    WeightsError,
)
from .spec import FEATURES, PROBABILITIES, SPEC
from .version import __version__

_EXPORTS = {
    "run": "pipeline.run",
    "RunOptions": "pipeline.run",
    "RunSummary": "pipeline.run",
    "RunProgress": "pipeline.run",
    "RunInterrupted": "pipeline.run",
    "Classifier": "pipeline.classifier",
    "explain": "pipeline.explain",
    "ExplainOptions": "pipeline.explain",
    "Explained": "pipeline.explain",
    "RayRunner": "cluster.runner",
    "LocalRunner": "pipeline.local",
    "Record": "results.records",
    "Prediction": "results.labels",
    "Preprocessing": "inputs.images",
    "DecodeLimits": "inputs.decoding",
    "load_engine": "engines.base",
    "quantize": "pipeline.quantize",
    "ensure_weights": "store.weights",
    "install_from_file": "store.weights",
    "export_model": "export.formats",
    "build_model": "network.model",
    "load_weights": "network.h5weights",
    "train": "training.train",
    "TrainOptions": "training.train",
    "Trained": "training.train",
    "Head": "results.heads",
    "load_head": "results.heads",
}
__all__ = [
    "FEATURES", "PROBABILITIES", "SPEC", "CalibrationError", "Classifier", "ClusterError",
    "DecodeLimits", "DownloadError", "EngineError", "ExplainOptions", "Explained", "ExportError",
    "Head", "HeadError", "Hint", "ImageError",
    "Irv2Error", "LocalRunner", "OutputError", "Prediction", "Preprocessing", "RayRunner",
    "Record",
    "RunInterrupted", "RunOptions", "RunProgress", "RunSummary", "ServeError", "TrainOptions",
    "Trained", "TrainingDataError", "WeightsError",
    "__version__", "build_model", "ensure_weights", "explain", "export_model", "install_from_file",
    "load_engine", "load_head", "load_weights", "quantize", "run", "train",
]

if TYPE_CHECKING:
    from .cluster.runner import RayRunner
    from .engines.base import load_engine
    from .export.formats import export_model
    from .inputs.decoding import DecodeLimits
    from .inputs.images import Preprocessing
    from .network.h5weights import load_weights
    from .network.model import build_model
    from .pipeline.classifier import Classifier
    from .pipeline.explain import Explained, ExplainOptions, explain
    from .pipeline.local import LocalRunner
    from .pipeline.quantize import quantize
    from .pipeline.run import RunInterrupted, RunOptions, RunProgress, RunSummary, run
    from .results.heads import Head, load_head
    from .results.labels import Prediction
    from .results.records import Record
    from .store.weights import ensure_weights, install_from_file
    from .training.train import Trained, TrainOptions, train


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
