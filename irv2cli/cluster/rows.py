"""Records as the columns that move between Ray Data stages, and back.

A batch between stages is a dict of NumPy arrays. Names travel as bytes (a local name
that is not UTF-8 survives exactly); an input that failed has its ``error`` and zeros
in the numeric columns, one that did not an empty ``error`` (never a null: a column of
nulls alone has no type, and comes back from Arrow as NaNs).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from ..results.features import DIM
from ..results.labels import ClassLabel, ranked
from ..results.records import Record
from ..results.writers import ENCODING, ERRORS
from ..spec import FEATURES, PROBABILITIES

Columns = dict[str, np.ndarray]
WARNING_SEPARATOR = "\n"  # a decoder's warnings are single lines


def name_bytes(path: str) -> bytes:
    """How a path travels: its bytes, exactly as the filesystem has them."""
    return path.encode(ENCODING, ERRORS)


def name_text(raw: bytes) -> str:
    """The path that ``name_bytes`` made."""
    return bytes(raw).decode(ENCODING, ERRORS)


def texts(values: list[str]) -> np.ndarray:
    """An object column of strings (Arrow strings)."""
    column = np.empty(len(values), dtype=object)
    column[:] = values
    return column


def warnings_text(warnings: tuple[str, ...]) -> str:
    return WARNING_SEPARATOR.join(warnings)


def warnings_of(text: str | None) -> tuple[str, ...]:
    return tuple(text.split(WARNING_SEPARATOR)) if text else ()


def record_columns(records: list[Record], outputs: tuple[str, ...], top_k: int) -> Columns:
    """The columns of ``records``: ``path``, ``error``, ``warnings``, and per output asked
    for ``classes``/``scores`` (top-k, best first) or ``features``."""
    size = len(records)
    columns: Columns = {
        "path": np.array([name_bytes(r.path) for r in records], dtype=object),
        "error": texts([r.error or "" for r in records]),
        "warnings": texts([warnings_text(r.warnings) for r in records]),
    }
    if PROBABILITIES in outputs:
        classes = np.full((size, top_k), -1, dtype=np.int32)
        scores = np.zeros((size, top_k), dtype=np.float64)
        for row, record in enumerate(records):
            for column, prediction in enumerate(record.predictions):
                classes[row, column] = prediction.index
                scores[row, column] = prediction.score
        columns["classes"], columns["scores"] = classes, scores
    if FEATURES in outputs:
        features = np.zeros((size, DIM), dtype=np.float32)
        for row, record in enumerate(records):
            if record.features is not None:
                features[row] = record.features
        columns["features"] = features
    return columns


def column_records(columns: Columns, classes: Sequence[ClassLabel] | None = None
                   ) -> list[Record]:
    """The records whose columns ``record_columns`` made; ``classes`` name the classes
    (default: ImageNet's; a head's own)."""
    records = []
    for row, (raw, error) in enumerate(zip(columns["path"], columns["error"], strict=True)):
        path = name_text(raw)
        if error:
            records.append(Record(path, error=str(error)))
            continue
        fields = {}
        if "classes" in columns:
            fields["predictions"] = ranked(columns["classes"][row], columns["scores"][row],
                                           classes)
        if "features" in columns:
            fields["features"] = np.asarray(columns["features"][row], dtype=np.float32)
        records.append(Record(path, warnings=warnings_of(columns["warnings"][row]), **fields))
    return records
