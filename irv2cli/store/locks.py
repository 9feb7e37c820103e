"""Cache locks that say what they wait for, and waits that end with the program.

A process that finds a cache lock held by another live process says so once, after a
short delay, and keeps waiting. On the main thread Ctrl-C stops the wait at once; on a
background thread (see ``preload``) the wait gives up as soon as the main thread has
finished, so the program never lingers at exit for a result nobody will read.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

Notify = Callable[[str], None]

POLL_S = 0.1
QUIET_WAIT_S = 1.0  # a lock released within this long is not worth a message


class Abandoned(Exception):
    """The program ended while a background thread still waited; nobody wants its result."""


def program_ending() -> bool:
    """True once the main thread has finished: a background wait should give up."""
    return not threading.main_thread().is_alive()


def check_abandoned() -> None:
    """Raise ``Abandoned`` on a background thread whose program is ending."""
    if program_ending():
        raise Abandoned("the program ended while this thread was waiting")


@contextmanager
def cache_lock(path: Path, holder: str, notify: Notify) -> Iterator[None]:
    """Hold the lock file ``path``. If another process holds it, say once (after a second)
    that this one waits for ``holder`` (e.g. "another irv2 process building ..."), and wait.
    (filelock is imported here: most runs never take a lock.)"""
    from filelock import FileLock, Timeout

    lock = FileLock(path)
    started = time.monotonic()
    said = False
    while True:
        try:
            lock.acquire(timeout=POLL_S)
            break
        except Timeout:
            check_abandoned()
            if not said and time.monotonic() - started >= QUIET_WAIT_S:
                notify(f"waiting for {holder} to finish (it holds {path})...")
                said = True
    try:
        yield
    finally:
        lock.release()
