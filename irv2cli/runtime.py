"""The fast runtime: the network exported once to ONNX and run by ONNX Runtime.

The artifact lives in the cache beside the weights, keyed by the weights' hash, the
input size, this package's version, the ONNX Runtime version and the CPU, so a stale
one is never used. It is stored already optimised by ONNX Runtime for this machine
(``optimized_model_filepath``), so a later session loads it with optimisation off:
that takes a fraction of a second instead of one. Building it needs TensorFlow;
running it does not import TensorFlow at all.
"""

from __future__ import annotations

import hashlib
import os
import platform
import tempfile
from collections.abc import Callable
from functools import cache
from pathlib import Path

import numpy as np
import onnxruntime as ort
from filelock import FileLock
from onnxruntime.capi.onnxruntime_pybind11_state import (
    Fail,
    InvalidArgument,
    InvalidGraph,
    InvalidProtobuf,
    NoSuchFile,
)

from . import __version__
from .spec import SPEC
from .weights import cache_dir, cached_weights_path, file_md5

LOAD_ERRORS = (Fail, InvalidArgument, InvalidGraph, InvalidProtobuf, NoSuchFile)
Notify = Callable[[str], None]


@cache
def machine_fingerprint() -> str:
    """What the optimised artifact depends on: ONNX Runtime's version and the CPU's features."""
    flags = ""
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            flags = next((line for line in cpuinfo if line.startswith("flags")), "")
    except OSError:
        pass
    text = f"{ort.__version__}|{platform.machine()}|{platform.processor()}|{flags}"
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def weights_key(weights: Path) -> str:
    """The weights' MD5: the pinned one for the installed official files, else computed."""
    for weight_file in (SPEC.top_weights, SPEC.notop_weights):
        official = cached_weights_path(weight_file)
        if official.exists() and official.samefile(weights):
            return weight_file.md5
    return file_md5(weights)


def artifact_path(weights: Path) -> Path:
    """Where the runtime artifact for ``weights`` lives (it may not exist yet)."""
    name = (f"irv2-{weights_key(weights)}-{SPEC.input_size}px-v{__version__}-"
            f"ort{machine_fingerprint()}.onnx")
    return cache_dir() / "runtime" / name


class OnnxEngine:
    """Runs an optimised artifact with ONNX Runtime: (N, 299, 299, 3) -> probabilities."""

    def __init__(self, artifact: Path):
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
        self.session = ort.InferenceSession(str(artifact), options,
                                            providers=["CPUExecutionProvider"])
        self.input_name = self.session.get_inputs()[0].name

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        return self.session.run(None, {self.input_name: np.asarray(batch, np.float32)})[0]


def build_artifact(weights: Path, target: Path) -> Path:
    """Export ``weights`` to ONNX, let ONNX Runtime optimise it, and move it to ``target``."""
    from .h5weights import load_weights
    from .model import build_model
    from .onnx_export import export_onnx

    model = build_model()
    load_weights(model, weights)
    with tempfile.TemporaryDirectory(dir=target.parent, prefix=".build-") as scratch:
        plain = export_onnx(model, Path(scratch) / "plain.onnx")
        del model
        optimized = Path(scratch) / "optimized.onnx"
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.optimized_model_filepath = str(optimized)
        options.log_severity_level = 3  # its note that the result suits this machine only
        ort.InferenceSession(str(plain), options, providers=["CPUExecutionProvider"])
        os.replace(optimized, target)
    return target


def load_onnx_engine(weights: Path, notify: Notify = lambda message: None) -> OnnxEngine:
    """The ONNX Runtime engine for ``weights``, building the artifact on first use.

    A corrupt or truncated artifact is rebuilt. Processes building the same artifact
    take turns on a lock, and each build is renamed into place atomically.
    """
    target = artifact_path(Path(weights))
    target.parent.mkdir(parents=True, exist_ok=True)
    engine = _load_if_sound(target, notify)
    if engine is not None:
        return engine
    with FileLock(f"{target}.lock"):
        engine = _load_if_sound(target)  # another process may have built it meanwhile
        if engine is not None:
            return engine
        target.unlink(missing_ok=True)
        notify("building the fast runtime for these weights (once; about half a minute)...")
        return OnnxEngine(build_artifact(Path(weights), target))


def _load_if_sound(target: Path, notify: Notify = lambda message: None) -> OnnxEngine | None:
    """The engine for an existing, loadable artifact; ``None`` if it is missing or damaged."""
    if not target.exists():
        return None
    try:
        return OnnxEngine(target)
    except LOAD_ERRORS:
        notify(f"the runtime artifact {target} is damaged; rebuilding it")
        return None
