"""Turn paths into batches: decode images in worker processes ahead of inference."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future
from dataclasses import dataclass, field
from itertools import islice

import numpy as np

from ..inputs.decoding import DecodedInOrder, DecodePool, Outcome
from ..inputs.images import Preprocessing, to_input
from ..spec import SPEC

Submit = Callable[[str], "Future[Outcome]"]
"""Starts decoding one path; the future's result is a ``Decoded`` or an error message."""


@dataclass(frozen=True)
class Batch:
    """Up to ``batch_size`` inputs in order; ``inputs[i]`` is the image of ``paths[decoded[i]]``.

    ``errors`` and ``warnings`` are keyed by position in ``paths``; ``pixels`` are the
    decoded images as the workers gave them (N, 299, 299, 3) uint8, ``inputs`` scaled.
    """

    paths: tuple[str, ...]
    inputs: np.ndarray
    decoded: tuple[int, ...]
    errors: dict[int, str] = field(default_factory=dict)
    warnings: dict[int, tuple[str, ...]] = field(default_factory=dict)
    pixels: np.ndarray | None = None


def _assemble(paths: list[str], outcomes: list[Outcome]) -> Batch:
    decoded = tuple(i for i, o in enumerate(outcomes) if not isinstance(o, str))
    size = SPEC.input_size
    pixels = (np.stack([outcomes[i].pixels for i in decoded]) if decoded
              else np.zeros((0, size, size, 3), np.uint8))
    errors = {i: o for i, o in enumerate(outcomes) if isinstance(o, str)}
    warnings = {i: outcomes[i].warnings for i in decoded if outcomes[i].warnings}
    return Batch(tuple(paths), to_input(pixels), decoded, errors, warnings, pixels)


def iter_batches(paths: Iterable[str], submit: Submit, batch_size: int) -> Iterator[Batch]:
    """Decode ``paths`` through ``submit`` and yield them in order, in batches.

    At most two batches are decoded ahead of the consumer, so memory stays flat however
    many paths there are; a file that fails to decode becomes an error in its batch.
    """
    with DecodedInOrder(paths, submit, 2 * batch_size) as decoded:
        while items := list(islice(decoded, batch_size)):
            yield _assemble([path for path, _ in items], [outcome for _, outcome in items])


def decoded_batches(paths: Iterable[str], decoders: DecodePool, preprocessing: Preprocessing,
                    batch_size: int) -> Iterator[Batch]:
    """``paths`` decoded by ``decoders`` with ``preprocessing``, in batches, in order."""
    return iter_batches(paths, lambda path: decoders.submit(path, preprocessing), batch_size)
