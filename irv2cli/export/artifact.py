"""Build the fast runtime's artifact: the network with named outputs, exported to ONNX and
optimised by ONNX Runtime for this machine; with calibration images, its int8 form.
Needs TensorFlow.

The engine runs it as a child process that it can stop at once:
``python -m irv2cli.export.artifact WEIGHTS OUT REFUSAL [CALIBRATION]``, where
``CALIBRATION`` is a ``.npy`` of uint8 images (see ``int8``). A weights file that does not
fit is refused before TensorFlow is imported: the ``WeightsError`` goes to ``REFUSAL``
(see ``write_refusal``) and the exit status is 3. Once the weights are accepted, the
child creates the started marker beside ``OUT``. It exits when its parent does.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
import threading
from pathlib import Path

from ..errors import WeightsError
from ..network.h5weights import weights_include_top
from ..store.artifacts import data_path, started_marker


def build_artifact(weights: Path, out: Path, calibration: Path | None = None) -> Path:
    """Export ``weights`` to ONNX with the outputs ``probabilities`` and ``features`` (only
    ``features`` for notop weights), quantize it to int8 on the images of ``calibration``
    if given, and write ONNX Runtime's optimisation of it for this machine to ``out`` (see
    ``optimise_for_this_machine``). Scratch files go beside ``out`` and are removed."""
    from ..network.heads import load_named_outputs
    from .onnx_graph import export_onnx

    model = load_named_outputs(weights)
    with tempfile.TemporaryDirectory(dir=out.parent, prefix=".export-") as scratch:
        graph = export_onnx(model, Path(scratch) / "plain.onnx")
        del model
        if calibration is not None:
            from .int8 import quantize_plain

            graph = quantize_plain(graph, calibration, Path(scratch) / "int8.onnx")
        return optimise_for_this_machine(graph, out)


def optimise_for_this_machine(graph: Path, out: Path) -> Path:
    """Write ONNX Runtime's optimisation of the ONNX file ``graph`` for this machine to
    ``out``, its weights to ``artifacts.data_path(out)``, which the graph names: a session
    maps that file into memory instead of parsing and copying the weights."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.optimized_model_filepath = str(out)
    options.add_session_config_entry(  # a file name, beside out
        "session.optimized_model_external_initializers_file_name", data_path(out).name)
    options.log_severity_level = 3  # its note that the result suits this machine only
    ort.InferenceSession(str(graph), options, providers=["CPUExecutionProvider"])
    return out


def build_child_main() -> None:
    """The build child: ``build_artifact(weights, out[, calibration])`` from the command
    line; a weights file that does not fit is written to ``refusal``. It exits when its
    parent does."""
    threading.Thread(target=_exit_with_parent, daemon=True).start()
    weights, out, refusal, *calibration = map(Path, sys.argv[1:])
    try:
        weights_include_top(weights)
    except WeightsError as exc:
        write_refusal(refusal, exc)
        sys.exit(3)
    started_marker(out).touch()
    build_artifact(weights, out, *calibration)


def write_refusal(path: Path, error: WeightsError) -> None:
    """Record ``error`` for the parent as JSON: its message and its hint's name (or null)."""
    hint = None if error.hint is None else error.hint.name
    path.write_text(json.dumps({"message": error.message, "hint": hint}))


def _exit_with_parent() -> None:
    """Read stdin, a pipe from the parent, until it closes: the parent finished or died.
    (Raw reads: a daemon thread blocked in ``sys.stdin`` would abort the interpreter's exit.)"""
    while os.read(sys.stdin.fileno(), 1024):
        pass
    os._exit(1)


if __name__ == "__main__":
    build_child_main()
