"""The fast runtime: the network exported once to ONNX and run by ONNX Runtime.

The artifact, cached per weights file and machine (see ``store.artifacts``), is stored
already optimised by ONNX Runtime for this machine (``optimized_model_filepath``), so a
later session loads it with optimisation off: that takes a fraction of a second instead
of one. Its weights lie in a data file beside the graph, which ONNX Runtime maps into
memory instead of parsing and copying 223 MB: the session is ready in tens of
milliseconds. Building it needs TensorFlow, so it runs in a child process (see
``builds``); running it does not import TensorFlow at all.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import numpy as np
import onnxruntime as ort
from onnxruntime.capi.onnxruntime_pybind11_state import (
    Fail,
    InvalidArgument,
    InvalidGraph,
    InvalidProtobuf,
    NoSuchFile,
)

from ..store import artifacts
from ..store.artifacts import artifact_path
from .builds import build_artifact, build_lock

LOAD_ERRORS = (Fail, InvalidArgument, InvalidGraph, InvalidProtobuf, NoSuchFile)
Notify = Callable[[str], None]


class OnnxEngine:
    """Runs an optimised artifact with ONNX Runtime: (N, 299, 299, 3) -> its named outputs."""

    def __init__(self, artifact: Path):
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
        # Idle compute threads sleep instead of spinning: spinning took CPU from the
        # decoding workers and the rest of the program (0.1 s of CPU in a one-image run,
        # and int8 folders ran faster without it; fp32 folders ran as fast).
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        # The int8 weights are repacked for the CPU as the session is created (about 90 ms
        # on one thread): on every compute thread instead; the packed weights are the same.
        options.add_session_config_entry("session.prepack.enable_parallel", "1")
        self.session = ort.InferenceSession(str(artifact), options,
                                            providers=["CPUExecutionProvider"])
        self.input_name = self.session.get_inputs()[0].name
        self.outputs = tuple(output.name for output in self.session.get_outputs())

    def __call__(self, batch: np.ndarray) -> dict[str, np.ndarray]:
        values = self.session.run(list(self.outputs),
                                  {self.input_name: np.asarray(batch, np.float32)})
        return dict(zip(self.outputs, values, strict=True))


def load_onnx_engine(weights: Path, notify: Notify = lambda message: None) -> OnnxEngine:
    """The ONNX Runtime engine for ``weights``, building the artifact on first use.

    An artifact that fails its checksum is rebuilt; a weights file that does not fit is
    refused before the build proper. Processes building the same artifact take turns on a
    lock (``notify`` hears when this one waits), and a build's leftovers are removed under it.
    """
    weights = Path(weights)
    target = artifact_path(weights)
    target.parent.mkdir(parents=True, exist_ok=True)
    engine = _load_if_sound(target, notify)
    if engine is not None:
        artifacts.remove_stale_builds_if_free(target)
        return engine
    with build_lock(target, "the fast runtime", notify):
        engine = _load_if_sound(target)  # another process may have built it meanwhile
        if engine is not None:
            return engine
        build_artifact(weights, target, notify)
        return OnnxEngine(target)


def _load_if_sound(target: Path, notify: Notify = lambda message: None) -> OnnxEngine | None:
    """The engine for an existing artifact whose checksum matches; ``None`` if it is
    missing, or (said through ``notify``) damaged."""
    if not os.path.lexists(target):
        return None
    damage = artifacts.damage(target)
    if damage is None:
        try:
            return OnnxEngine(target)
        except LOAD_ERRORS as exc:
            damage = f"does not load ({exc})"
    notify(f"the runtime artifact {target} {damage}; rebuilding it")
    return None
