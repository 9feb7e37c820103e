"""Build the fast runtime's artifact: the network with named outputs, exported to ONNX and
optimised by ONNX Runtime for this machine; with calibration images, its int8 form.
Needs TensorFlow.

``engines.builds`` runs it as a child process that it can stop at once:
``python -m irv2cli.export.artifact WEIGHTS OUT REFUSAL [CALIBRATION]``, where
``CALIBRATION`` is a ``.npy`` of uint8 images (see ``quantize_plain``). A weights file that does not
fit is refused before TensorFlow is imported: the ``WeightsError`` goes to ``REFUSAL``
(see ``write_refusal``) and the exit status is 3. Once the weights are accepted, the
child creates the started marker beside ``OUT``. It exits when its parent does.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import tempfile
import threading
from pathlib import Path

from ..errors import WeightsError
from ..network.h5weights import weights_include_top
from ..store.artifacts import data_path, started_marker

CALIBRATION_BATCH = 8


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


def quantize_plain(plain: Path, calibration: Path, out: Path) -> Path:
    """Quantize the plain graph ``plain`` with the pixels saved in ``calibration`` (a
    ``.npy`` of uint8 images) and write the int8 graph to ``out``: ONNX Runtime's
    ``quantize_static`` in QDQ form, per-channel int8 weights, uint8 activations whose
    ranges are the minima and maxima seen on the calibration images. It must be given
    the plain graph (``onnx_graph.export_onnx``): a graph ONNX Runtime has already
    optimised for a machine holds reorder nodes that break bias quantization."""
    import numpy as np
    from onnxruntime.quantization import (
        CalibrationDataReader,
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_static,
    )

    from ..inputs.images import to_input
    from .onnx_graph import INPUT_NAME

    class CalibrationImages(CalibrationDataReader):
        """The images, as the network sees them, a few at a time."""

        def __init__(self, pixels: np.ndarray):
            self.batches = (to_input(pixels[start:start + CALIBRATION_BATCH])
                            for start in range(0, len(pixels), CALIBRATION_BATCH))

        def get_next(self) -> dict[str, np.ndarray] | None:
            batch = next(self.batches, None)
            return None if batch is None else {INPUT_NAME: batch}

    logging.getLogger().setLevel(logging.ERROR)  # its advice to pre-process the graph
    pixels = np.load(calibration, mmap_mode="r")
    quantize_static(str(plain), str(out), CalibrationImages(pixels),
                    quant_format=QuantFormat.QDQ, per_channel=True,
                    activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                    calibrate_method=CalibrationMethod.MinMax)
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
