"""Signals held back from the calling thread for a while: they stay pending and arrive
as soon as the block ends (where the platform cannot block them, they are not held)."""

from __future__ import annotations

import contextlib
import signal
from collections.abc import Iterable, Iterator


def named(*names: str) -> frozenset[signal.Signals]:
    """The signals of ``names`` that this platform has."""
    return frozenset(getattr(signal, name) for name in names if hasattr(signal, name))


@contextlib.contextmanager
def blocked(signals: Iterable[signal.Signals]) -> Iterator[None]:
    """``signals`` blocked in this thread meanwhile (threads and processes it starts
    meanwhile inherit the mask); the mask as it was afterwards."""
    if not hasattr(signal, "pthread_sigmask"):
        yield
        return
    before = signal.pthread_sigmask(signal.SIG_BLOCK, signals)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, before)
