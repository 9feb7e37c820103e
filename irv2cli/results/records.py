"""Records: the answer for one input, as every front end and writer sees it."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING

from .labels import Prediction

if TYPE_CHECKING:
    import numpy as np


@dataclass(frozen=True)
class Record:
    """The answer for one input: its top-k predictions and/or its features, or why it
    could not be processed.

    ``features`` is the 1536-d average-pooled vector (float32) when the run asked for it;
    ``pixels`` the decoded network input (299x299x3 uint8) when the run kept them (for
    thumbnails). Neither is written by the results writers.
    ``warnings`` are what the image's decoder warned about (corrupt metadata, a short
    read); they are shown on request and are not part of the written record.
    """

    path: str
    predictions: list[Prediction] = field(default_factory=list)
    error: str | None = None
    warnings: tuple[str, ...] = ()
    features: np.ndarray | None = field(default=None, compare=False, repr=False)
    pixels: np.ndarray | None = field(default=None, compare=False, repr=False)

    def to_dict(self) -> dict:
        """The record as predict writes it: path, predictions, error."""
        return {"path": self.path, "predictions": [asdict(p) for p in self.predictions],
                "error": self.error}
