"""Turn paths into batches: decode images on a thread pool ahead of inference."""

from __future__ import annotations

import os
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np

from .errors import ImageError
from .spec import SPEC


@dataclass(frozen=True)
class Batch:
    """Up to ``batch_size`` inputs in order; ``inputs[i]`` is the image of ``paths[decoded[i]]``."""

    paths: tuple[str, ...]
    inputs: np.ndarray
    decoded: tuple[int, ...]
    errors: dict[int, str] = field(default_factory=dict)


def default_workers() -> int:
    """Decoding threads: one per core, at least two (Pillow releases the GIL)."""
    return max(2, os.cpu_count() or 1)


def _load(loader: Callable[[str], np.ndarray], path: str) -> np.ndarray | str:
    try:
        return loader(path)
    except ImageError as exc:
        return str(exc)


def _assemble(paths: list[str], results: list[np.ndarray | str]) -> Batch:
    decoded = tuple(i for i, r in enumerate(results) if not isinstance(r, str))
    size = SPEC.input_size
    inputs = (np.stack([results[i] for i in decoded]) if decoded
              else np.zeros((0, size, size, 3), np.float32))
    errors = {i: r for i, r in enumerate(results) if isinstance(r, str)}
    return Batch(tuple(paths), inputs, decoded, errors)


def iter_batches(paths: Iterable[str], loader: Callable[[str], np.ndarray],
                 batch_size: int, workers: int | None = None) -> Iterator[Batch]:
    """Decode ``paths`` with ``loader`` on ``workers`` threads and yield them in order.

    At most two batches are decoded ahead of the consumer, so memory stays flat however
    many paths there are; a file that fails to load becomes an error in its batch.
    """
    pending: deque[tuple[str, Future]] = deque()
    ahead = 2 * batch_size
    with ThreadPoolExecutor(workers or default_workers(), "irv2-decode") as pool:
        try:
            for path in paths:
                pending.append((path, pool.submit(_load, loader, path)))
                if len(pending) >= batch_size + ahead:
                    yield _take(pending, batch_size)
            while pending:
                yield _take(pending, batch_size)
        finally:
            for _, future in pending:
                future.cancel()


def _take(pending: deque[tuple[str, Future]], batch_size: int) -> Batch:
    items = [pending.popleft() for _ in range(min(batch_size, len(pending)))]
    return _assemble([p for p, _ in items], [f.result() for _, f in items])
