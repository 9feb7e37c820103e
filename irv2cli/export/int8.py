"""Static int8 quantization of the plain ONNX graph, calibrated on the user's images.

ONNX Runtime's ``quantize_static`` in QDQ form: per-channel int8 weights, uint8
activations whose ranges are the minima and maxima seen on the calibration images. It
must be given the plain graph (``onnx_graph.export_onnx``): the graph ONNX Runtime has
already optimised for a machine holds reorder nodes that break bias quantization. The
result is optimised for this machine afterwards, as the fp32 artifact is.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
from onnxruntime.quantization import (
    CalibrationDataReader,
    CalibrationMethod,
    QuantFormat,
    QuantType,
    quantize_static,
)

from ..inputs.images import to_input

CALIBRATION_BATCH = 8


class CalibrationImages(CalibrationDataReader):
    """Feeds the network's input ``name`` with the images of ``pixels`` (N, 299, 299, 3)
    uint8, as the network sees them, a few at a time."""

    def __init__(self, pixels: np.ndarray, name: str = "images"):
        self.pixels, self.name, self.start = pixels, name, 0

    def get_next(self) -> dict[str, np.ndarray] | None:
        if self.start >= len(self.pixels):
            return None
        batch = self.pixels[self.start:self.start + CALIBRATION_BATCH]
        self.start += CALIBRATION_BATCH
        return {self.name: to_input(batch)}


def quantize_plain(plain: Path, calibration: Path, out: Path) -> Path:
    """Quantize the plain graph ``plain`` with the pixels saved in ``calibration`` (a
    ``.npy`` of uint8 images) and write the int8 graph to ``out``."""
    logging.getLogger().setLevel(logging.ERROR)  # its advice to pre-process the graph
    pixels = np.load(calibration, mmap_mode="r")
    quantize_static(str(plain), str(out), CalibrationImages(pixels),
                    quant_format=QuantFormat.QDQ, per_channel=True,
                    activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                    calibrate_method=CalibrationMethod.MinMax)
    return out
