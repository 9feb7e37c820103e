"""A head on an engine: the network's features -> the probabilities of the user's classes.

Wrapping the engine, rather than the run, lets every runner (this machine, a Ray
cluster) and every precision classify with a head: they see an engine whose
``probabilities`` are the head's and whose ``classes`` name them.
"""

from __future__ import annotations

import numpy as np

from ..errors import EngineError
from ..results.heads import Head
from ..results.labels import ClassLabel
from ..spec import FEATURES, PROBABILITIES
from .base import Engine, Outputs


class HeadEngine:
    """``engine`` with ``head`` applied to its features: outputs ``probabilities`` (N, C),
    over the head's classes, and ``features`` (N, 1536), the engine's own."""

    outputs = (PROBABILITIES, FEATURES)

    def __init__(self, engine: Engine, head: Head):
        if FEATURES not in engine.outputs:
            raise EngineError("this engine gives no features, which a head needs")
        self.engine, self.head = engine, head
        self.classes: tuple[ClassLabel, ...] = head.labels
        self.report = getattr(engine, "report", None)  # the int8 runtime's, for the summary

    def __call__(self, batch: np.ndarray) -> Outputs:
        features = self.engine(batch)[FEATURES]
        return {PROBABILITIES: self.head.probabilities(features), FEATURES: features}
