"""SIGTERM and SIGHUP stop a run the way Ctrl-C does.

Their handlers raise ``Stopped``, a ``KeyboardInterrupt`` that carries the signal, so
the code that finishes a run cleanly on Ctrl-C (closing the output, saying how to
resume) handles them too; the exit status is 128 + the signal's number, as a shell
reports a process killed by it.
"""

from __future__ import annotations

import signal


class Stopped(KeyboardInterrupt):
    """The program was asked to stop by the signal ``signum``."""

    def __init__(self, signum: int):
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


def _raise_stopped(signum: int, frame) -> None:
    raise Stopped(signum)


def stop_on_signals() -> None:
    """From now on SIGTERM and SIGHUP (where it exists) raise ``Stopped`` in the main thread."""
    for name in ("SIGTERM", "SIGHUP"):
        if hasattr(signal, name):
            signal.signal(getattr(signal, name), _raise_stopped)


def exit_status(interrupt: KeyboardInterrupt) -> int:
    """128 + the signal that stopped the program: 130 Ctrl-C, 143 SIGTERM, 129 SIGHUP."""
    return 128 + getattr(interrupt, "signum", signal.SIGINT)
