"""The ``irv2`` command: parse, call the library, render. TensorFlow loads only when needed."""

from __future__ import annotations

import atexit
import importlib
import os
import signal
import sys
import threading

import click

from ..errors import Irv2Error
from ..version import __version__
from .advice import user_message
from .signals import exit_status, stop_on_signals

# Each command by name, as "module:function" in this package: a command's module is
# imported when it runs (or when help lists them all), so `irv2 predict` loads no other.
COMMANDS = {
    "predict": "predict:predict",
    "embed": "embed:embed",
    "explain": "explain:explain",
    "quantize": "quantize:quantize",
    "download-weights": "weights:download_weights",
    "export": "export:export",
    "bench": "bench:bench",
    "summary": "summary:summary",
    "report": "report:report",
    "serve": "serve:serve",
    "train": "train:train",
}


class Irv2Group(click.Group):
    """Turns the library's errors into one-line messages (exit 1), and an interrupt
    (Ctrl-C, SIGTERM, SIGHUP) into the exit status 128 + its signal, in one place. Its
    commands are ``COMMANDS``, each imported when asked for."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(COMMANDS)

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        if name not in COMMANDS:
            return None
        module, function = COMMANDS[name].split(":")
        return getattr(importlib.import_module(f".{module}", __package__), function)

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except Irv2Error as exc:
            raise click.ClickException(user_message(exc)) from None
        except KeyboardInterrupt as exc:
            raise click.exceptions.Exit(exit_status(exc)) from None


@click.group(cls=Irv2Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="irv2")
def cli() -> None:
    """Classify images with Inception-ResNet-V2 (ImageNet, 1000 classes)."""


def main() -> None:
    """The ``irv2`` command line in this process: runs the command, then raises
    ``SystemExit`` with its status (``program`` is what the ``irv2`` command runs)."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    # NumPy's OpenBLAS starts a thread per core that spins as NumPy is imported: 0.1 s of
    # CPU taken from the engine and the decoding workers, for BLAS work irv2 never asks of
    # NumPy (ONNX Runtime and TensorFlow bring their own).
    os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
    stop_on_signals()
    cli()


def program() -> None:
    """The ``irv2`` program (its console script, ``python -m irv2cli``): ``main``, after
    which the process ends as soon as its exit handlers have run (see ``_end_now``). A
    standard stream the caller closed (``>&-``) is /dev/null meanwhile."""
    _standard_streams_open()
    atexit.register(_end_now)  # the first registered, so the last to run
    try:
        main()
    except SystemExit as done:
        _ending(0 if done.code is None else done.code if isinstance(done.code, int) else 1)
        raise
    except BaseException:
        _ending(1)  # a bug: Python prints its traceback, then exits
        raise


_status: int | None = None  # the program's exit status, once its command is done


def _ending(status: int) -> None:
    """The command is done with ``status``: a signal from here on ends nothing that is not
    done already, so it is ignored, unless a thread that is not a daemon still runs (the
    interpreter waits for it, and Ctrl-C must still work meanwhile)."""
    global _status
    _status = status
    others = [thread for thread in threading.enumerate() if thread is not threading.main_thread()]
    if not any(not thread.daemon for thread in others):
        for name in ("SIGINT", "SIGTERM", "SIGHUP"):
            if hasattr(signal, name):
                signal.signal(getattr(signal, name), signal.SIG_IGN)


def _end_now() -> None:
    """The last exit handler: every other one has run (multiprocessing's, Ray's, temporary
    folders', the build child's) and every thread that is not a daemon has ended, so end
    the process with the program's status now, without the interpreter's teardown. That
    teardown frees the objects of NumPy, ONNX Runtime and rich one by one (20-30 ms) for
    the system to free their memory again, and a session ONNX Runtime is still creating
    on another thread can abort it. If stdout cannot take what is left in its buffer,
    the usual exit goes on, and reports that."""
    if _status is None:
        return
    try:
        for stream in (sys.stdout, sys.stderr):
            stream.flush()
    except (OSError, ValueError):
        return
    os._exit(_status)


def _standard_streams_open() -> None:
    """Open /dev/null on each standard stream that is closed, so that output meant for it
    goes nowhere instead of failing, and the processes this one starts inherit a stream."""
    for fd, name in enumerate(("stdin", "stdout", "stderr")):
        try:
            os.fstat(fd)
        except OSError:
            null = os.open(os.devnull, os.O_RDWR)
            if null != fd:
                os.dup2(null, fd)
                os.close(null)
            if getattr(sys, name) is None:  # Python found it closed: one for the program's life
                setattr(sys, name, open(fd, "r" if fd == 0 else "w", closefd=False))  # noqa: SIM115
