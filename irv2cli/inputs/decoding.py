"""Decode untrusted image files in worker processes, each with a memory ceiling and a
per-file time limit, so a hostile file costs its own record and never the run.

The workers are ``pebble`` processes started with ``spawn`` (a fresh interpreter, never
a fork of a process that holds an inference session and its threads). A worker that
crashes (a segfault in a C decoder), runs out of its memory or takes too long is
replaced, and that file's outcome says which. Whatever a decoder prints or warns is
captured per file, so nothing reaches the terminal uninvited.
"""

from __future__ import annotations

import contextlib
import ctypes
import multiprocessing
import os
import signal
import sys
import tempfile
import threading
import warnings
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, InvalidStateError
from concurrent.futures import TimeoutError as FutureTimeout
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from itertools import islice
from typing import TYPE_CHECKING, Generic, NamedTuple, TypeVar

import pebble
from pebble import ProcessExpired, ProcessPool

from ..errors import ImageError
from ..sigmask import blocked, named
from .images import Preprocessing, prepare
from .uris import filesystem, is_uri

if TYPE_CHECKING:
    import numpy as np

GiB = 1 << 30
# pebble's manager threads poll every 0.1 s, and stopping a pool waits for them: 10 ms
# takes about 60 ms off every run's exit, at a negligible cost while it runs.
pebble.CONSTS.sleep_unit = 0.01
# A worker killed while it takes a task from pebble's channel leaves the channel's lock
# held for ever: every other worker, and the pool, then wait this long before pebble gives
# the pool up (and ``DecodePool`` starts a new one). Held for microseconds otherwise.
pebble.CONSTS.channel_lock_timeout = 3.0
WATCH_INTERVAL = 0.5  # seconds between looks at whether pebble has given its pool up
# Pools a file may see given up before it reaches a worker (each failing every file still
# queued in it) before its outcome says so: workers killed again and again, by the system.
POOLS_LOST_PER_FILE = 3
MAX_RLIMIT = 1 << 63  # setrlimit takes no larger number


@dataclass(frozen=True)
class DecodeLimits:
    """What one file may cost a worker: memory beyond the worker's own start-up footprint
    (Linux only: ``RLIMIT_AS``), and seconds of decoding."""

    memory: int | None = 2 * GiB
    timeout: float | None = 30.0


@dataclass(frozen=True)
class Decoded:
    """One file's network input pixels (299x299x3 uint8) and what its decoder warned."""

    pixels: np.ndarray
    warnings: tuple[str, ...] = ()


Outcome = Decoded | str
"""A decoded image, or the one-line reason (naming the file) why there is none."""


class _RawPixels(NamedTuple):
    """What a worker sends back: RGB bytes, not an array, so it never imports NumPy."""

    data: bytes
    width: int
    height: int
    warnings: tuple[str, ...]

    def decoded(self) -> Decoded:
        import numpy as np

        pixels = np.frombuffer(self.data, np.uint8).reshape(self.height, self.width, 3)
        return Decoded(pixels, self.warnings)


def format_bytes(size: int) -> str:
    """``2 GiB``, ``512 MiB``: the way ``--decode-memory`` takes sizes."""
    for unit, scale in (("GiB", GiB), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if size >= scale:
            return f"{size / scale:g} {unit}"
    return f"{size} bytes"


def default_workers() -> int:
    """Decoding processes: one per core, at least two."""
    return max(2, os.cpu_count() or 1)


@dataclass(frozen=True)
class _Pending:
    """A file submitted and not yet settled: its outcome, ``_decode_file``'s arguments,
    and how many more times it may go to a new pool if pebble fails it as it gives its
    pool up."""

    outcome: Future
    item: tuple
    retries: int = POOLS_LOST_PER_FILE


class DecodePool:
    """Worker processes decoding files; ``submit`` never raises for a bad file."""

    def __init__(self, workers: int, limits: DecodeLimits = DecodeLimits()):
        self.limits = limits
        self.workers = workers
        self._replacing = threading.Lock()  # one new pool at a time (see _replace)
        # The current pool's unsettled tasks. No lock guards it (pebble's threads, which
        # settle tasks, must never wait for one that a Ctrl-C could leave held): each
        # entry is added and popped by one dict operation, atomic under the GIL.
        self._pending: dict[Future, _Pending] = {}
        self._retrying: set[Future] = set()  # outcomes on their way to a new pool
        self._closed = threading.Event()
        self._pool = self._start()
        self._watchdog = threading.Thread(target=self._watch, name="irv2-decode-watchdog",
                                          daemon=True)
        self._watchdog.start()

    def _start(self) -> ProcessPool:
        with _interrupts_blocked():
            _start_resource_tracker()
        # A block of its own: starting the tracker unblocks SIGINT again on its way out.
        with _interrupts_blocked():  # pebble's threads, and the workers they start, too
            pool = ProcessPool(self.workers, initializer=_start_worker,
                               initargs=(_NoiseFile(), self.limits.memory),
                               context=multiprocessing.get_context("spawn"))
            for _ in range(self.workers):  # start every worker now, while the engine loads
                pool.schedule(_ready)
        return pool

    def submit(self, path: str, preprocessing: Preprocessing, data: bytes | None = None
               ) -> Future[Outcome]:
        """A future outcome for ``path``: ``Decoded``, or the reason it could not be. With
        ``data``, the image is those bytes (an upload), which ``path`` names."""
        outcome: Future[Outcome] = Future()
        self._decode(_Pending(outcome, (path, preprocessing, data)))
        return outcome

    def _decode(self, pending: _Pending) -> None:
        """Decode ``pending.item`` (``_decode_file``'s arguments) into its outcome; if no
        worker can be started for it, the outcome says so."""
        try:
            task = None if pending.outcome.cancelled() else self._schedule(pending)
        except Exception as exc:  # a new pool could not start: out of descriptors, say
            _give(pending.outcome, _no_workers(pending.item[0], exc))
            return
        if task is None:  # given up on, or the pool is closed
            pending.outcome.cancel()
            return
        task.add_done_callback(self._done)

    def _done(self, task: Future) -> None:
        """Settle a finished task's outcome; once the pool is closed, cancel it. If pebble
        failed the file as it gave its pool up (the file never reached a worker), send it
        to a new pool, from a thread of its own (never pebble's, which replacing the pool
        waits for)."""
        pending = self._pending.pop(task, None)
        if pending is None:  # its pool was given up, and a new one took it over
            return
        if self._closed.is_set():
            pending.outcome.cancel()
        elif (pending.retries and not task.cancelled()
                and isinstance(task.exception(), BrokenProcessPool)):
            self._retrying.add(pending.outcome)  # for close() to cancel meanwhile
            retry = _Pending(pending.outcome, pending.item, pending.retries - 1)
            threading.Thread(target=self._retry, args=(retry,), daemon=True).start()
        else:
            _settle(pending.outcome, task, pending.item[0], self.limits)

    def _retry(self, pending: _Pending) -> None:
        try:
            self._decode(pending)
        finally:
            self._retrying.discard(pending.outcome)

    def _schedule(self, pending: _Pending) -> Future | None:
        """``pending``'s task in a worker; ``None`` once the pool is closed."""
        while True:
            with self._replacing:  # a pool being replaced takes no task meanwhile
                if self._closed.is_set():
                    return None
                pool = self._pool
                try:
                    task = pool.schedule(_decode_file, pending.item,
                                         timeout=self.limits.timeout)
                except RuntimeError:
                    if pool.active:
                        raise
                else:
                    self._pending[task] = pending
                    return task
            self._replace(pool)

    def _watch(self) -> None:
        """Replace the pool whenever pebble has given it up with files still in it. It
        does so when a worker dies between files (killed by the system, say), failing only
        the tasks already handed to its channel; the files still queued would never be
        settled, and no later ``submit`` may come to find the pool broken."""
        while not self._closed.wait(WATCH_INTERVAL):
            pool = self._pool
            if self._pending and not pool.active:
                # a new pool that cannot start has its stranded files say so; the next
                # look, or the next submit, tries again
                with contextlib.suppress(Exception):
                    self._replace(pool)

    def _replace(self, broken: ProcessPool) -> None:
        """Start a new pool in place of ``broken`` (unless that is done already), and hand
        it the files ``broken`` still held. If the new pool cannot start, those files'
        outcomes say why, and the error is raised."""
        with self._replacing:
            if self._closed.is_set() or self._pool is not broken:
                return
            # untracked before the stop: what pebble makes of them while it stops (a
            # channel already closed, say) is not the files' outcome
            stranded = self._take_pending()
            self._stop()
            try:
                self._pool = self._start()
            except BaseException as exc:
                for held in stranded:
                    _give(held.outcome, _no_workers(held.item[0], exc))
                raise
        for held in stranded:
            self._decode(held)

    def _take_pending(self) -> list[_Pending]:
        """The current pool's unsettled tasks, no longer tracked (a stopped pebble pool
        never settles the tasks it had not handed to a worker)."""
        stranded = (self._pending.pop(task, None) for task in list(self._pending)
                    if not task.done())
        return [held for held in stranded if held is not None]

    def close(self) -> None:
        """Stop the workers, abandoning whatever they are decoding (or starting): the
        outcomes not yet settled are cancelled."""
        self._closed.set()
        with self._replacing:
            stranded = self._take_pending()
            self._stop()
        for outcome in [*(held.outcome for held in stranded), *self._retrying]:
            outcome.cancel()
        self._watchdog.join()

    def _stop(self) -> None:
        self._pool.stop()
        self._pool.join()

    def __enter__(self) -> DecodePool:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()


T = TypeVar("T")


class DecodedInOrder(Generic[T]):
    """Each of ``items`` with its outcome, in order: ``submit(item)`` starts decoding it
    (``None``: nothing to decode, the item comes with ``None``), at most ``ahead`` items
    ahead of the one being consumed, so memory stays flat however many there are.

    The first ``ahead`` start at once, so decoding overlaps whatever the caller does
    before it asks for the first (a network loading, say); that is why this is an
    iterator with ``close`` rather than a generator, whose body would wait for the first
    ``next``. Leaving the ``with`` block (or ``close``) cancels what is still pending.
    """

    def __init__(self, items: Iterable[T], submit: Callable[[T], Future[Outcome] | None],
                 ahead: int):
        self._items, self._submit = iter(items), submit
        self._pending: deque[tuple[T, Future[Outcome] | None]] = deque()
        try:
            for item in islice(self._items, ahead):
                self._pending.append((item, submit(item)))
        except BaseException:
            self.close()
            raise

    def __iter__(self) -> DecodedInOrder[T]:
        return self

    def __next__(self) -> tuple[T, Outcome | None]:
        if not self._pending:
            raise StopIteration
        for following in islice(self._items, 1):
            self._pending.append((following, self._submit(following)))
        item, future = self._pending[0]  # pending (and cancelled on close) until it is done
        outcome = None if future is None else future.result()
        self._pending.popleft()
        return item, outcome

    def close(self) -> None:
        """Cancel the decoding of every item not yet consumed."""
        while self._pending:
            _, future = self._pending.popleft()
            if future is not None:
                future.cancel()

    def __enter__(self) -> DecodedInOrder[T]:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()


# Ctrl-C and a closed terminal reach the whole process group: the run handles them, and a
# process it starts must never see them, not even while its interpreter starts.
_INTERRUPTS = named("SIGINT", "SIGHUP")


def _interrupts_blocked() -> contextlib.AbstractContextManager[None]:
    """Block Ctrl-C and SIGHUP in this thread meanwhile. Processes started meanwhile (through
    fork and exec) and threads inherit the mask: a worker still importing Python when the
    terminal's Ctrl-C comes would die with a ``KeyboardInterrupt`` traceback on the
    terminal, and multiprocessing's resource tracker, which ignores SIGINT and SIGTERM but
    not SIGHUP, would die and be restarted with warnings."""
    return blocked(_INTERRUPTS)


def _start_resource_tracker() -> None:
    """Start multiprocessing's resource tracker (which the pool's locks need) now, within
    ``_interrupts_blocked``, rather than whenever the first lock is made."""
    if os.name == "posix":
        from multiprocessing import resource_tracker

        resource_tracker.ensure_running()


def _settle(outcome: Future, task: Future, path: str, limits: DecodeLimits) -> None:
    """Turn a worker's result, or the way it failed, into ``outcome``'s result."""
    if task.cancelled():
        outcome.cancel()
        return
    _give(outcome, _outcome(task, path, limits))


def _give(outcome: Future, result: Outcome) -> None:
    """``result`` as ``outcome``'s, unless the consumer gave up on it (cancelled)."""
    with contextlib.suppress(InvalidStateError):
        outcome.set_result(result)


def _no_workers(path: str, exc: BaseException) -> str:
    return (f"{path}: could not be decoded: no decoding worker could be started "
            f"({type(exc).__name__}: {exc}); free some memory, processes or open files, "
            "and try it again.")


def _outcome(task: Future, path: str, limits: DecodeLimits) -> Outcome:
    try:
        result = task.result()
    except FutureTimeout:
        return (f"{path}: decoding took longer than {limits.timeout:g} s, so it was stopped; "
                "raise the time limit (decode-timeout) if the file is just large.")
    except ProcessExpired as exc:
        return f"{path}: {_expiry_reason(exc.exitcode)}; the file is probably corrupt or hostile."
    except BrokenProcessPool:
        return (f"{path}: could not be decoded: the decoding workers were killed again and "
                f"again before it reached one ({POOLS_LOST_PER_FILE + 1} times; by the "
                "system for lack of memory, perhaps); try it again.")
    except Exception as exc:  # the pool itself failed: still only this file's outcome
        return f"{path}: could not be decoded ({type(exc).__name__}: {exc})."
    return result.decoded() if isinstance(result, _RawPixels) else result


def _expiry_reason(exitcode: int | None) -> str:
    if exitcode is not None and exitcode < 0:
        name = signal.Signals(-exitcode).name
        if -exitcode == signal.SIGKILL:
            return f"the decoder was killed ({name}), perhaps by the system for lack of memory"
        return f"the decoder crashed ({name})"
    return f"the decoder exited unexpectedly (status {exitcode})"


# --- inside a worker process ----------------------------------------------------------

_memory_limit: int | None = None
_memory_asked: int | None = None  # --decode-memory, for setting the ceiling again
_uris_opened = False  # whether pyarrow is loaded here, to read files named by URI
_noise: int = -1  # a file that stands in for the worker's stderr


class _NoiseFile:
    """Travels to each worker among its initializer's arguments and arrives as the file
    descriptor of a new noise file, now the worker's stderr: pebble sends those arguments
    ahead of its channel, so this happens before anything else can fail in the worker. A
    pool stopped while a worker starts unlinks the channel's semaphores before it stops
    the worker (pebble 5.2.3), which then fails to open them: its traceback goes there,
    not to the run's terminal."""

    def __reduce__(self) -> tuple:
        return _stderr_to_noise, ()


def _stderr_to_noise() -> int:
    """A new unnamed file, made this process's stderr; its descriptor."""
    noise, name = tempfile.mkstemp(prefix="irv2-decoder-")
    os.unlink(name)  # gone from the folder at once; the kernel frees it with the worker
    os.dup2(noise, 2)
    return noise


def _start_worker(noise: int, memory: int | None) -> None:
    """Set the worker up: signals, parent-death, stderr capture, memory ceiling."""
    global _memory_limit, _memory_asked, _noise
    for interrupt in _INTERRUPTS:  # Ctrl-C and a closed terminal are the parent's to handle
        signal.signal(interrupt, signal.SIG_IGN)
    if hasattr(signal, "pthread_sigmask"):  # blocked since the worker started
        signal.pthread_sigmask(signal.SIG_UNBLOCK, _INTERRUPTS)
    _die_with_parent()
    _noise = noise
    if memory is not None:
        _memory_asked, _memory_limit = memory, _set_memory_ceiling(memory)


def _die_with_parent() -> None:
    """On Linux, have the kernel end this worker when the run dies, even by SIGKILL."""
    if sys.platform.startswith("linux"):
        with contextlib.suppress(OSError, AttributeError):
            pr_set_pdeathsig = 1
            ctypes.CDLL(None, use_errno=True).prctl(pr_set_pdeathsig, signal.SIGKILL)


def _set_memory_ceiling(memory: int) -> int | None:
    """Cap this process's address space at its current size plus ``memory`` (Linux only:
    other systems do not enforce ``RLIMIT_AS``), or lower where the hard limit someone
    already set (``ulimit -v``) is lower, which no process may raise; return the memory
    allowed beyond the current size, or None for no ceiling."""
    if not sys.platform.startswith("linux"):
        return None
    import resource

    with open("/proc/self/statm") as statm:
        current = int(statm.read().split()[0]) * os.sysconf("SC_PAGE_SIZE")
    hard = resource.getrlimit(resource.RLIMIT_AS)[1]
    ceiling = current + memory
    if hard != resource.RLIM_INFINITY:
        ceiling = min(ceiling, hard)
    if ceiling >= MAX_RLIMIT:  # more than any address space: no ceiling at all
        return None
    resource.setrlimit(resource.RLIMIT_AS, (ceiling, hard))
    return max(ceiling - current, 0)


def _open_uris(uri: str) -> None:
    """Load pyarrow and open ``uri``'s filesystem above the memory ceiling, then set the
    ceiling again over the larger footprint: pyarrow, NumPy and the cloud SDKs reserve
    hundreds of MB of address space as they load, which is the worker's cost, not the
    file's (under a small ceiling they would fail to load at all). Nothing of the file is
    read meanwhile; a filesystem that cannot be opened says so when the file is read."""
    global _uris_opened, _memory_limit
    _uris_opened = True
    if _memory_asked is None or not sys.platform.startswith("linux"):
        return
    import resource

    hard = resource.getrlimit(resource.RLIMIT_AS)[1]
    resource.setrlimit(resource.RLIMIT_AS, (hard, hard))
    try:
        with contextlib.suppress(Exception):
            filesystem(uri)
    finally:
        _memory_limit = _set_memory_ceiling(_memory_asked)


def _ready() -> None:
    """A no-op task, scheduled only to make the pool start its workers at once."""


def _decode_file(path: str, preprocessing: Preprocessing, data: bytes | None = None
                 ) -> _RawPixels | str:
    """Decode one file (or the image ``data`` it names) in this worker; every failure
    becomes that file's reason."""
    from PIL import Image

    Image.MAX_IMAGE_PIXELS = preprocessing.max_pixels  # Pillow's own bomb guard stays on
    if data is None and not _uris_opened and is_uri(path):
        _open_uris(path)
    with _captured_warnings() as caught:
        try:
            image = prepare(path, preprocessing, data)
        except ImageError as exc:
            return str(exc)
        except MemoryError:
            limit = format_bytes(_memory_limit) if _memory_limit else "the available memory"
            return (f"{path}: decoding needed more than {limit}; raise the memory limit "
                    "(decode-memory) if you trust this file.")
        except Exception as exc:
            return f"{path}: the decoder failed ({type(exc).__name__}: {exc})."
    return _RawPixels(image.tobytes(), image.width, image.height, tuple(caught))


@contextlib.contextmanager
def _captured_warnings() -> Iterator[list[str]]:
    """Python warnings and whatever C libraries wrote to stderr meanwhile, as lines."""
    caught: list[str] = []
    with warnings.catch_warnings(record=True) as recorded:
        warnings.simplefilter("always")
        try:
            yield caught
        finally:
            caught.extend(f"{w.category.__name__}: {w.message}" for w in recorded)
            caught.extend(_drain_noise())


def _drain_noise() -> list[str]:
    """The lines written to this worker's stderr since the last call, then forget them."""
    if _noise < 0:
        return []
    size = os.fstat(_noise).st_size
    text = os.pread(_noise, size, 0).decode("utf-8", "replace") if size else ""
    os.ftruncate(_noise, 0)
    os.lseek(_noise, 0, os.SEEK_SET)
    return [line.strip() for line in text.splitlines() if line.strip()]
