"""Turn batches into records: run an engine on decoded images, keep the outputs asked for."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from ..inputs.decoding import DecodeLimits, DecodePool, default_workers
from ..inputs.images import Preprocessing, load_input
from ..results.labels import ClassLabel, Prediction, decode_top_k
from ..results.records import Record
from ..spec import DEFAULT_MAX_PIXELS, FEATURES, PROBABILITIES, SPEC
from .batches import Batch, decoded_batches

if TYPE_CHECKING:
    from ..engines.base import Engine, Outputs


@dataclass
class Classifier:
    """Classify (or embed) image files or preprocessed arrays with one loaded engine.

    ``outputs`` names what each record carries: ``probabilities`` (its top-k
    ``predictions``) and/or ``features`` (its 1536-d vector); with ``keep_pixels``, a
    decoded image's record also carries its input ``pixels`` (299x299x3 uint8).

    >>> classifier = Classifier.from_weights()          # official weights, cached
    >>> for record in classifier.classify(["cat.jpg"]):
    ...     print(record.predictions[0].label)
    """

    engine: Engine
    top_k: int = 5
    outputs: tuple[str, ...] = (PROBABILITIES,)
    resize: str = SPEC.default_resize
    interpolation: str = SPEC.default_interpolation
    max_pixels: int | None = DEFAULT_MAX_PIXELS
    batch_size: int = 8
    workers: int | None = None
    decode_limits: DecodeLimits = field(default_factory=DecodeLimits)
    keep_pixels: bool = False

    @classmethod
    def from_weights(cls, weights: str | os.PathLike | None = None, backend: str = "auto",
                     **options) -> Classifier:
        """Load an engine (see ``engines.load_engine``) for ``weights`` (default: the
        official file, fetched if missing); ``options`` are the dataclass fields."""
        from ..engines.base import load_engine
        from ..store.weights import ensure_weights

        return cls(load_engine(weights or ensure_weights(), backend), **options)

    @property
    def classes(self) -> tuple[ClassLabel, ...] | None:
        """What the engine's probabilities are over: a head's classes (``engines.head``),
        or ``None`` for ImageNet's."""
        return getattr(self.engine, "classes", None)

    @property
    def preprocessing(self) -> Preprocessing:
        return Preprocessing(self.resize, self.interpolation, self.max_pixels)

    def load(self, path: str | os.PathLike) -> np.ndarray:
        """One trusted file as a network input, decoded in this process."""
        return load_input(path, self.resize, self.interpolation, self.max_pixels)

    def decode_pool(self) -> DecodePool:
        """Worker processes that decode files for ``classify``, within ``decode_limits``."""
        return DecodePool(self.workers or default_workers(), self.decode_limits)

    def infer(self, inputs: np.ndarray) -> Outputs:
        """The outputs asked for, for a preprocessed batch (N, 299, 299, 3) in [-1, 1]; an
        engine that returns NaN or infinity in one, or lacks one (notop weights give no
        probabilities), raises ``EngineError``."""
        from ..engines.base import check_outputs, finite_scores

        outputs = self.engine(np.asarray(inputs, dtype=np.float32))
        check_outputs(outputs, self.outputs)
        return finite_scores({name: outputs[name] for name in self.outputs})

    def classify_arrays(self, inputs: np.ndarray) -> list[list[Prediction]]:
        """Top-k for a preprocessed batch (N, 299, 299, 3) in [-1, 1]."""
        from ..engines.base import class_probabilities

        probabilities = class_probabilities(self.engine(np.asarray(inputs, dtype=np.float32)))
        return [decode_top_k(p, self.top_k, self.classes) for p in probabilities]

    def classify_batch(self, batch: Batch) -> list[Record]:
        """Records for every path of ``batch``, in order, failures included."""
        rows = iter(self._rows(self.infer(batch.inputs), batch) if batch.decoded else [])
        return [
            Record(path, error=batch.errors[i]) if i in batch.errors
            else Record(path, warnings=batch.warnings.get(i, ()), **next(rows))
            for i, path in enumerate(batch.paths)
        ]

    def _rows(self, outputs: Outputs, batch: Batch) -> Iterator[dict]:
        """Each decoded image's record fields: its top-k and/or its features, as asked
        for, and its pixels when kept."""
        for i in range(len(next(iter(outputs.values())))):
            fields = {}
            if PROBABILITIES in self.outputs:
                fields["predictions"] = decode_top_k(outputs[PROBABILITIES][i], self.top_k,
                                                     self.classes)
            if FEATURES in self.outputs:
                fields["features"] = outputs[FEATURES][i]
            if self.keep_pixels:
                fields["pixels"] = batch.pixels[i]
            yield fields

    def classify_batches(self, batches: Iterable[Batch]) -> Iterator[Record]:
        """Records for every path of ``batches``, in order."""
        for batch in batches:
            yield from self.classify_batch(batch)

    def classify(self, paths: Iterable[str | Path], decoders: DecodePool | None = None
                 ) -> Iterator[Record]:
        """Records for ``paths`` in order, decoded ahead by ``decoders`` (default: a pool
        of this classifier's own, stopped when the iteration ends)."""
        with contextlib.ExitStack() as stack:
            if decoders is None:
                decoders = stack.enter_context(self.decode_pool())
            yield from self.classify_batches(decoded_batches(
                (str(p) for p in paths), decoders, self.preprocessing, self.batch_size))
