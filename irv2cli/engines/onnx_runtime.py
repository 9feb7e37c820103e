"""The fast runtime: the network exported once to ONNX and run by ONNX Runtime.

The artifact, cached per weights file and machine (see ``store.artifacts``), is stored
already optimised by ONNX Runtime for this machine (``optimized_model_filepath``), so a
later session loads it with optimisation off: that takes a fraction of a second instead
of one. Its weights lie in a data file beside the graph, which ONNX Runtime maps into
memory instead of parsing and copying 223 MB: the session is ready in tens of
milliseconds. Building it needs TensorFlow, so it runs in a child process
(``irv2cli.export.artifact``) that can be stopped at once; running it does not import
TensorFlow at all.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
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

from ..errors import EngineError, Hint, WeightsError
from ..store import artifacts
from ..store.artifacts import artifact_path
from ..store.locks import POLL_S, cache_lock, check_abandoned

LOAD_ERRORS = (Fail, InvalidArgument, InvalidGraph, InvalidProtobuf, NoSuchFile)
Notify = Callable[[str], None]

BUILD_CHILD = "irv2cli.export.artifact"  # run as a module, so this one never imports it
FP32_BUILD = "building the fast runtime for these weights (once; about half a minute)..."
INT8_BUILD = ("building the int8 runtime for these weights (half a minute, plus the "
              "calibration images through the network)...")


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
    with cache_lock(artifacts.lock_path(target),
                    "another irv2 process building the fast runtime", notify):
        engine = _load_if_sound(target)  # another process may have built it meanwhile
        if engine is not None:
            return engine
        artifacts.remove_leftovers(target)
        with artifacts.build_folder(target) as scratch:
            built = _run_build_child(weights, scratch / target.name, notify)
            artifacts.install(built, target, scratch)
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


def _run_build_child(weights: Path, built: Path, notify: Notify,
                     calibration: Path | None = None) -> Path:
    """Build the artifact in a child process writing ``built`` (named as the artifact will
    be, since the graph names its data file) in a scratch folder; the int8 one with the
    images saved in ``calibration``. ``notify`` hears when the weights are accepted and
    the build begins. The child is killed if this program is interrupted or ends
    meanwhile."""
    refusal, log = built.with_name("refusal.txt"), built.with_name("log")
    extra = [] if calibration is None else [str(calibration)]
    with open(log, "wb") as log_file:
        child = subprocess.Popen(
            [sys.executable, "-m", BUILD_CHILD, str(weights), str(built), str(refusal), *extra],
            stdin=subprocess.PIPE, stdout=log_file, stderr=subprocess.STDOUT)
    try:
        _wait(child, artifacts.started_marker(built), notify,
              FP32_BUILD if calibration is None else INT8_BUILD)
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
        child.stdin.close()
    if refusal.exists():
        raise _refused(refusal)
    if child.returncode != 0:
        tail = " | ".join(log.read_text(errors="replace").strip().splitlines()[-3:])
        raise EngineError(
            f"building the fast runtime for {weights} failed (exit status "
            f"{child.returncode}); the reference Keras backend does not need it. "
            f"The build's last words: {tail}")
    return built


def _refused(refusal: Path) -> WeightsError:
    """The build child's ``WeightsError``, as it recorded it (see ``export.artifact``)."""
    record = json.loads(refusal.read_text())
    hint = record["hint"]
    return WeightsError(record["message"], Hint[hint] if hint else None)


def _wait(child: subprocess.Popen, started: Path, notify: Notify, building: str) -> None:
    """Wait for ``child``, saying ``building`` once when ``started`` appears.
    Ctrl-C interrupts the wait, and so does the program's end."""
    said = False
    while True:
        try:
            child.wait(timeout=POLL_S)
            return
        except subprocess.TimeoutExpired:
            check_abandoned()
        if not said and started.exists():
            notify(building)
            said = True
