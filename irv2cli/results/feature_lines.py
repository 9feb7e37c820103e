"""Features as JSON Lines: ``{"path": ..., "features": [1536 floats], "error": null}``
per image (``"features": null`` and the error for one that failed).

Each float32 is written as the Python float it equals exactly, so reading a line back
as float32 gives the very same bits. The file is held, written in place and resumed
like predict's (see ``locked``): a crash or a full disk costs at most the record it cut.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .features import DIM, feature_vector
from .locked import LinesOutput, open_append
from .records import Record
from .scanning import Lines, held_by, json_lines
from .writers import TextWriter, json_line


class FeatureLinesWriter(TextWriter):
    """One JSON object per line: path, features, error."""

    def encode(self, record: Record) -> str:
        vector = feature_vector(record)
        return json_line({"path": record.path,
                          "features": None if vector is None else vector.tolist(),
                          "error": record.error}) + "\n"


def feature_record(data: dict) -> Record:
    """The record a feature line holds; raises ``ValueError`` for a line that is not one."""
    error, values = data["error"], data["features"]
    if error is not None:
        if values is not None or not isinstance(error, str):
            raise ValueError("an error record with features")
        return Record(data["path"], error=error)
    features = np.asarray(values, dtype=np.float32)
    if features.shape != (DIM,):
        raise ValueError("not a feature vector")
    return Record(data["path"], features=features)


def open_feature_lines(path: Path, *, resume: bool, overwrite: bool) -> LinesOutput:
    """``path`` held for this run as a JSON Lines feature file (see ``open_features``)."""
    file, held = open_append(path, resume=resume, overwrite=overwrite, scan=lambda stream:
                             held_by(json_lines(Lines(stream, path), feature_record)))
    return LinesOutput(file, FeatureLinesWriter, held)
