"""Start loading the engine before the rest of the program is even imported.

ONNX Runtime releases the GIL while it reads and initialises the artifact (about
0.6 s), so importing NumPy, Pillow and rich, opening the output and walking the
inputs happen meanwhile. This module imports nothing heavy itself.
"""

from __future__ import annotations

import sys
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

from .spec import SPEC
from .weights import cached_weights_path


def _load(weights: Path, backend: str, quiet: bool):
    from .engines import load_engine

    def notify(message: str) -> None:
        if not quiet:
            print(message, file=sys.stderr)

    return load_engine(weights, backend, notify)


def start_loading(weights: Path | None, backend: str, quiet: bool = False) -> Future | None:
    """A future engine for ``weights`` (default: the installed official file), loading on a
    background thread; ``None`` when the official file still has to be downloaded."""
    if weights is None:
        weights = cached_weights_path(SPEC.top_weights)
        if not weights.exists():
            return None
    executor = ThreadPoolExecutor(1, "irv2-engine")
    future = executor.submit(_load, weights, backend, quiet)
    executor.shutdown(wait=False)  # the load runs on; nothing else will be submitted
    return future
