"""TensorFlow and Keras, imported without TensorFlow's start-up noise on stderr.

What prints it, on a machine without a GPU: loading TensorFlow's libraries logs the
oneDNN notice and "Could not find cuda drivers" through absl *before* absl logging is
initialised, when absl writes every message to stderr whatever ``TF_CPP_MIN_LOG_LEVEL``
says; then the CPU-instructions notice; then finding devices logs "failed call to
cuInit" at ERROR severity, which only ``TF_CPP_MIN_LOG_LEVEL=3`` hides, together with
every real error. No setting silences exactly the noise, so the import and the device
search run with file descriptor 2 read through a filter that drops those known lines
and passes everything else on as it comes. Import from here, before any other module
imports them: ``from .quiet import keras`` or ``from ..network.quiet import tensorflow``.
"""

from __future__ import annotations

import atexit
import fcntl
import os
import re
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager, suppress

NVIDIA_DEVICE = "/dev/nvidiactl"  # present where an NVIDIA driver is installed


def tensorflow_noise(gpu_driver: bool) -> re.Pattern[bytes]:
    """Whole lines, each a message seen from TensorFlow 2.21 on a CPU-only machine. Where
    an NVIDIA driver is installed (``gpu_driver``), cuInit's failure is news, not noise: it
    is the one line that says why TensorFlow fell back to the CPU, so it passes."""
    cuinit = b"" if gpu_driver else rb"|failed call to cuInit: "
    return re.compile(
        rb"WARNING: All log messages before absl::InitializeLog\(\) is called are written to"
        rb" STDERR$"
        rb"|[IWE]\d{4} [\d:.]+ +\d+ [\w.]+:\d+\] (?:"
        rb"oneDNN custom operations are on\."
        rb"|Could not find cuda drivers on your machine, GPU will not be used\.$"
        rb"|This TensorFlow binary is optimized to use available CPU instructions"
        + cuinit + rb")"
        rb"|To enable the following instructions: .* rebuild TensorFlow with the appropriate"
        rb" compiler flags\.$"
    )


TENSORFLOW_NOISE = tensorflow_noise(gpu_driver=os.path.exists(NVIDIA_DEVICE))
PIPE_SIZE = 1 << 20  # room for any burst written while the filter thread waits for the GIL


def _write(fd: int, data: bytes) -> None:
    with suppress(OSError):  # stderr gone: the filter still drains the pipe
        while data:
            data = data[os.write(fd, data):]


def _pass_lines(target: int, data: bytes, noise: re.Pattern[bytes], final: bool) -> bytes:
    """Write the lines of ``data`` that ``noise`` does not match to ``target``; return the
    unfinished last line, or write it too when ``final``."""
    *lines, tail = data.split(b"\n")
    kept = b"".join(line + b"\n" for line in lines if not noise.match(line))
    if final and tail and not noise.match(tail):
        kept, tail = kept + tail, b""
    _write(target, kept)
    return b"" if final else tail


class _Filter:
    """File descriptor 2 into a pipe; a thread copies it to the real stderr, less noise.

    Processes started meanwhile (decoding workers) inherit the pipe as their stderr, so
    closing does not wait for the pipe's end: it restores fd 2, writes ``token`` into the
    pipe and waits until the thread has passed everything before it on. The thread goes
    on copying for those children until the last one exits. While open, ``sys.stderr``
    still says whether stderr is a terminal, so a progress bar decided meanwhile shows.
    """

    def __init__(self, noise: re.Pattern[bytes]):
        self.noise, self.token = noise, b"\0irv2-filter-" + os.urandom(8).hex().encode()
        self.caught = threading.Event()
        self.lock = threading.Lock()
        sys.stderr.flush()
        source, self.sink = os.pipe()
        with suppress(AttributeError, OSError):  # Linux only, within the system's limit
            fcntl.fcntl(self.sink, fcntl.F_SETPIPE_SZ, PIPE_SIZE)
        self.saved = os.dup(2)
        threading.Thread(target=self._copy, args=(source, os.dup(2)),
                         name="irv2-stderr-filter", daemon=True).start()
        self.stderr, tty = sys.stderr, os.isatty(self.saved)
        with suppress(AttributeError, ValueError):  # a replaced stderr may not allow it
            self.stderr.isatty = lambda: tty
        os.dup2(self.sink, 2)

    def _copy(self, source: int, target: int) -> None:
        pending = b""
        while chunk := os.read(source, 65536):
            pending += chunk
            if self.token in pending:
                before, _, pending = pending.partition(self.token)
                _pass_lines(target, before, self.noise, final=True)
                self.caught.set()
            pending = _pass_lines(target, pending, self.noise, final=False)
        _pass_lines(target, pending, self.noise, final=True)
        self.caught.set()
        os.close(source)
        os.close(target)

    def close(self) -> None:
        with self.lock:
            if self.sink < 0:
                return
            with suppress(ValueError, OSError):
                sys.stderr.flush()
            os.dup2(self.saved, 2)
            with suppress(AttributeError):
                del self.stderr.isatty
            _write(self.sink, self.token)
            os.close(self.sink)
            os.close(self.saved)
            self.sink = -1
        self.caught.wait()


@contextmanager
def filtered_stderr(noise: re.Pattern[bytes] = TENSORFLOW_NOISE) -> Iterator[None]:
    """Within the block, whatever this process writes to file descriptor 2 (C++ code
    included, from any thread) reaches the real stderr less the lines ``noise`` matches.
    A program that ends meanwhile closes it on its way out, losing nothing."""
    window = _Filter(noise)
    atexit.register(window.close)
    try:
        yield
    finally:
        window.close()
        atexit.unregister(window.close)


with filtered_stderr():
    import keras
    import tensorflow

    tensorflow.config.list_physical_devices()  # where cuInit's failure is logged

__all__ = ["filtered_stderr", "keras", "tensorflow"]
