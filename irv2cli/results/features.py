"""Feature files: what ``irv2 embed`` writes, one 1536-d float32 vector per image.

Three formats, named by the extension or by ``fmt``:

- ``jsonl`` (``.jsonl``, ``.ndjson``): ``{"path": ..., "features": [...], "error": null}``
  per line, written in place and resumed like predict's files (``feature_lines``);
- ``parquet``: columns path, features (fixed-size list of 1536 float32) and error, put
  in place whole at the end of a run (``feature_parquet``);
- ``npy``: an (N, 1536) float32 array of the images that decoded, and a sidecar
  ``NAME.paths.jsonl`` listing every input in order (``feature_npy``).

Every format holds the output for one run at a time (a lock), needs ``resume`` or
``overwrite`` to touch an existing file, and gives ``done``: the path keys it holds.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from ..errors import Hint, OutputError
from ..spec import FEATURE_FORMATS, SPEC
from .records import Record
from .writers import Output, shown

DIM = SPEC.feature_dim
FEATURE_EXTENSIONS = {".parquet": "parquet", ".npy": "npy", ".jsonl": "jsonl",
                      ".ndjson": "jsonl"}


def feature_format(path: str | os.PathLike, fmt: str | None = None) -> str:
    """``fmt`` if given, else the feature format the file's extension names."""
    if fmt:
        if fmt not in FEATURE_FORMATS:
            raise OutputError(f"{fmt!r} is not a feature format "
                              f"({', '.join(FEATURE_FORMATS)})", hint=Hint.NAME_FORMAT)
        return fmt
    try:
        return FEATURE_EXTENSIONS[Path(path).suffix.lower()]
    except KeyError:
        raise OutputError(f"{shown(path)}: cannot tell the feature format from the "
                          "extension (.parquet, .npy, .jsonl)", hint=Hint.NAME_FORMAT) from None


def feature_vector(record: Record) -> np.ndarray | None:
    """The record's features as a (1536,) float32 array; ``None`` for an error record."""
    if record.error is not None:
        return None
    if record.features is None:
        raise ValueError(f"{shown(record.path)}: a record with neither features nor error")
    vector = np.asarray(record.features, dtype=np.float32)
    if vector.shape != (DIM,):
        raise ValueError(f"{shown(record.path)}: features of shape {vector.shape}, "
                         f"not ({DIM},)")
    return vector


def open_features(path: str | os.PathLike, fmt: str | None = None, *, resume: bool,
                  overwrite: bool) -> Output:
    """The feature file ``path`` opened and locked for one run, in ``fmt`` (default: from
    its extension), holding what an earlier run wrote when resuming. An empty file
    counts as missing; any other needs ``resume`` or ``overwrite``; what is not a regular
    file, or is held by another run, is refused before anything is read."""
    path = Path(path)
    fmt = feature_format(path, fmt)
    if fmt == "parquet":
        from .feature_parquet import open_parquet

        return open_parquet(path, resume=resume, overwrite=overwrite)
    if fmt == "npy":
        from .feature_npy import open_npy

        return open_npy(path, resume=resume, overwrite=overwrite)
    from .feature_lines import open_feature_lines

    return open_feature_lines(path, resume=resume, overwrite=overwrite)
