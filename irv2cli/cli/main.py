"""The ``irv2`` command: parse, call the library, render. TensorFlow loads only when needed."""

from __future__ import annotations

import atexit
import gc
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
    """The ``irv2`` program (its console script, ``python -m irv2cli``): ``main``, then the
    process ends at once (see ``_exit_at_once``), a bug's traceback included. A standard
    stream the caller closed (``>&-``) is /dev/null meanwhile."""
    _standard_streams_open()
    try:
        main()
    except SystemExit as done:
        _exit_at_once(done.code)
        raise
    except Exception:
        sys.excepthook(*sys.exc_info())  # what Python would print
        _exit_at_once(1)
        sys.exit(1)
    finally:
        # The usual exit, if it is taken: everything is written and closed by now, and the
        # interpreter's last garbage collections, which walk every object of NumPy, ONNX
        # Runtime and rich, would only delay it (by 25 ms or more each).
        gc.freeze()


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


def _exit_at_once(code: int | str | None) -> None:
    """End the process with the status ``code`` now that the command has written and
    closed everything: the exit handlers run (multiprocessing's, Ray's, temporary
    folders'), the interpreter's teardown does not. That teardown frees the objects of
    NumPy, ONNX Runtime and rich one by one (20-30 ms) for the system to free their memory
    again, and a session ONNX Runtime is still creating on another thread can abort it.
    A signal from here on ends nothing that is not done already, so it is ignored.
    Returns, for the usual exit, while another thread that is not a daemon still runs
    (it would be cut short), when the status is a message, or if stdout cannot take
    what is left in its buffer (the usual exit reports that)."""
    signals = [getattr(signal, name) for name in ("SIGINT", "SIGTERM", "SIGHUP")
               if hasattr(signal, name)]
    handlers = {signum: signal.signal(signum, signal.SIG_IGN) for signum in signals}
    others = [thread for thread in threading.enumerate() if thread is not threading.main_thread()]
    if any(not thread.daemon for thread in others) or not isinstance(code, int | None):
        for signum, handler in handlers.items():
            signal.signal(signum, handler)
        return
    atexit._run_exitfuncs()  # they run once: the usual exit finds none left
    try:
        for stream in (sys.stdout, sys.stderr):
            stream.flush()
    except (OSError, ValueError):
        return
    os._exit(code or 0)
