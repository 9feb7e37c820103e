"""Loaded by every Python started with this folder on PYTHONPATH (the decoding workers of
the hostile-file tests): registers the misbehaving test decoder with Pillow, and, where
IRV2_TEST_SLOW_START ("SECONDS MARKER") says so, makes every starting worker but the
first (the one that makes the file MARKER) slow and deaf to SIGTERM."""

import os
import signal
import sys
import time

import hostile_images  # noqa: F401


def _start_late(delay: float, marker: str) -> None:
    try:
        os.close(os.open(marker, os.O_CREAT | os.O_EXCL))
        return  # the first worker
    except FileExistsError:
        pass
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    time.sleep(delay)  # before multiprocessing reads the worker's state from its parent
    signal.signal(signal.SIGTERM, signal.SIG_DFL)


if "IRV2_TEST_SLOW_START" in os.environ and \
        "from multiprocessing.spawn import spawn_main" in " ".join(sys.orig_argv):
    _delay, _marker = os.environ["IRV2_TEST_SLOW_START"].split(" ", 1)
    _start_late(float(_delay), _marker)
