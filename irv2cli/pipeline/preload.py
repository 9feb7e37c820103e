"""Start loading the engine before the rest of the program is even imported (or defer it
until a run needs one).

ONNX Runtime releases the GIL while it checks and initialises the artifact, so
importing rich, opening the output and walking the inputs happen meanwhile. Its
imports (NumPy, ONNX Runtime) hold the GIL, though: ``EngineLoading.imported`` says
when they are done, so that the program's own imports wait rather than take turns with
them (each would only slow the other). This module imports nothing heavy itself.

The load runs on a daemon thread, never joined at exit: a signal that interrupts the
main thread's imports can leave an import lock held that the load then waits on
forever, and a load still waiting for a lock or a build when the program is
interrupted must not keep it alive (``locks.program_ending`` makes such waits give up,
and the build's child process ends with its parent).
"""

from __future__ import annotations

import sys
import threading
from collections.abc import Callable
from concurrent.futures import Future
from pathlib import Path
from typing import TYPE_CHECKING

from ..spec import SPEC
from ..store.weights import cached_weights_path

if TYPE_CHECKING:
    from ..engines.base import Engine


def _load(weights: Path, backend: str, quiet: bool, precision: str,
          imported: threading.Event):
    try:
        from ..engines.base import load_engine

        if backend != "keras":  # nothing waits seconds for TensorFlow's import
            from ..engines import onnx_runtime  # noqa: F401
    finally:
        imported.set()

    def notify(message: str) -> None:
        if not quiet:
            print(message, file=sys.stderr)

    return load_engine(weights, backend, notify, precision)


class EngineLoading(Future):
    """An engine loading on a daemon thread; ``imported`` is set once that thread has
    imported what it needs, whether the load then succeeds or not."""

    def __init__(self) -> None:
        super().__init__()
        self.imported = threading.Event()


def _fulfil(future: EngineLoading, *args) -> None:
    """Load the engine into ``future``."""
    future.set_running_or_notify_cancel()
    try:
        future.set_result(_load(*args, future.imported))
    except Exception as exc:
        future.set_exception(exc)


class Deferred:
    """An engine loaded only when a run first needs one (a resumed run may need none)."""

    def __init__(self, load: Callable[[], Engine]):
        self._load, self._engine = load, None

    def result(self) -> Engine:
        if self._engine is None:
            self._engine = self._load()
        return self._engine

    @property
    def loaded(self) -> Engine | None:
        """The engine, if a run has loaded it."""
        return self._engine


def start_loading(weights: Path | None, backend: str, quiet: bool = False,
                  precision: str = "fp32") -> EngineLoading | None:
    """A future engine for ``weights`` (default: the installed official file), loading on a
    background thread; ``None`` when the official file still has to be downloaded."""
    if weights is None:
        weights = cached_weights_path(SPEC.top_weights)
        if not weights.exists():
            return None
    future = EngineLoading()
    threading.Thread(target=_fulfil, args=(future, weights, backend, quiet, precision),
                     name="irv2-engine", daemon=True).start()
    return future
