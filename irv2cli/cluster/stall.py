"""Says when a run on a Ray cluster stops moving: Ray Data waits without a word for
resources that may never come (CPUs that other work holds, a node that is gone)."""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable
from types import TracebackType

PATIENCE = 60.0  # seconds without a finished image before the run says so


class StallWatch:
    """While entered, calls ``notify`` each time another ``patience`` seconds pass
    without ``moved()``, with what ``describe()`` says of the cluster then."""

    def __init__(self, notify: Callable[[str], None], describe: Callable[[], str],
                 patience: float = PATIENCE, clock: Callable[[], float] = time.monotonic):
        self.notify, self.describe, self.patience, self.clock = (notify, describe, patience,
                                                                 clock)
        self._last = clock()
        self._said = 0  # stalls of ``patience`` said since the run last moved
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, name="irv2-stall-watch",
                                        daemon=True)

    def moved(self) -> None:
        """The run made progress (an image finished)."""
        self._last = self.clock()
        self._said = 0

    def check(self) -> None:
        """Say so if the run has not moved for another ``patience`` seconds."""
        still = self.clock() - self._last
        if still >= self.patience * (self._said + 1):
            self._said = int(still // self.patience)
            self.notify(f"no image finished in the last {still:.0f} s; the Ray cluster has "
                        f"{self.describe()} (`ray status` on its head node says what Ray "
                        "waits for; a run stopped now can be resumed)")

    def __enter__(self) -> StallWatch:
        self._thread.start()
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 traceback: TracebackType | None) -> None:
        self._stop.set()
        self._thread.join()

    def _watch(self) -> None:
        while not self._stop.wait(min(self.patience / 4, 5.0)):
            with contextlib.suppress(Exception):  # a cluster that cannot be asked: no word
                self.check()
