"""Output files held by one run: locked, never anything but a regular file, and written
in place after the last complete record an earlier run left.

The file is opened once and locked (``flock`` on the file itself) for the whole run, so
a second run on it is refused at once. A symlink is followed, so the output goes to its
target. An ``AppendFile`` is never replaced, so its inode, mode, links and lock stay:
resuming scans the whole file first, and the first write truncates it after the last
complete record and appends. Nothing is created or truncated before the first record
(or the end of the run): a run that fails before that leaves an existing file as it
was, and removes the empty file it made.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import stat
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

from ..errors import Hint, OutputError
from ..sigmask import blocked, named
from .scanning import Held
from .writers import ENCODING, ERRORS, Output, RecordWriter, os_reason, shown, write_error

KINDS = {stat.S_ISDIR: "a directory", stat.S_ISFIFO: "a FIFO (named pipe)",
         stat.S_ISCHR: "a character device", stat.S_ISBLK: "a block device",
         stat.S_ISSOCK: "a socket"}


def write_failed(path: Path, exc: OSError) -> OutputError:
    """A failed write (a full disk): the complete records stay, to resume."""
    return write_error(str(path), exc, hint=Hint.RESUME)


def identity(fd: int) -> tuple[int, int]:
    """The (device, inode) of the open file ``fd``."""
    info = os.fstat(fd)
    return info.st_dev, info.st_ino


def _check_regular(path: Path, mode: int) -> None:
    for test, kind in KINDS.items():
        if test(mode):
            raise OutputError(f"{shown(path)} is {kind}, not a regular file",
                              hint=Hint.OTHER_OUTPUT)


def _open(target: str) -> tuple[int, bool]:
    """``target`` opened for reading and writing, and whether this call created it."""
    flags = os.O_RDWR | os.O_NONBLOCK | os.O_CLOEXEC
    while True:  # until it either exists or is ours
        with contextlib.suppress(FileNotFoundError):
            return os.open(target, flags), False
        with contextlib.suppress(FileExistsError):
            return os.open(target, flags | os.O_CREAT | os.O_EXCL, 0o666), True


def is_at(fd: int, target: str) -> bool:
    """Whether the open file ``fd`` is still the file at ``target`` (not replaced or
    removed since it was opened)."""
    try:
        info = os.stat(target)
    except FileNotFoundError:
        return False
    return identity(fd) == (info.st_dev, info.st_ino)


def _open_regular(path: Path, target: str) -> tuple[int, bool]:
    """``target`` opened (see ``_open``); what is not a regular file is refused first."""
    try:
        with contextlib.suppress(FileNotFoundError):
            _check_regular(path, os.stat(target).st_mode)
        return _open(target)
    except OSError as exc:
        raise OutputError(f"{shown(path)}: cannot write results "
                          f"({os_reason(exc)}).") from None


def _lock(path: Path, fd: int) -> None:
    """Lock the open file ``path`` at once; one another run holds is refused."""
    _check_regular(path, os.fstat(fd).st_mode)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        raise OutputError(f"{shown(path)} is being written by another irv2 run: wait for "
                          "it to finish", hint=Hint.OTHER_OUTPUT) from None


def open_locked(path: Path) -> tuple[int, str, bool]:
    """``path`` opened and locked: its descriptor, its target (symlinks followed) and
    whether this call created it; what is not a regular file is refused before it is
    opened, a file another run holds at once. A file that another run replaced or
    removed between the open and the lock (a Parquet output put in place) is let go
    and the path opened again."""
    target = os.path.realpath(path)
    while True:
        fd, created = _open_regular(path, target)
        try:
            _lock(path, fd)
            if is_at(fd, target):
                return fd, target, created
        except BaseException:
            os.close(fd)
            raise
        os.close(fd)


def check_writable(path: Path, fd: int, *, resume: bool, overwrite: bool) -> int:
    """The size of the open file ``path``; an empty file counts as missing, any other
    needs ``resume`` or ``overwrite``."""
    size = os.fstat(fd).st_size
    if size and not (resume or overwrite):
        raise OutputError(f"{shown(path)} already exists", hint=Hint.RESUME_OR_OVERWRITE)
    return size


def write_at(fd: int, data: bytes, offset: int) -> None:
    """All of ``data`` written to ``fd`` at ``offset``."""
    view = memoryview(data)
    while view:
        written = os.pwrite(fd, view, offset)
        view, offset = view[written:], offset + written


# Ctrl-C, SIGTERM and SIGHUP wait while a record is written and its end recorded
HELD_SIGNALS = named("SIGINT", "SIGTERM", "SIGHUP")


class AppendFile:
    """A locked file written in place after its last complete record (``end``): a text
    stream whose every flush is written as one piece."""

    def __init__(self, path: Path, fd: int, target: str, created: bool, end: int):
        self.path, self.fd, self._target, self._created = path, fd, target, created
        self.end = end  # everything before it is complete records
        self._started = False  # truncated to end, then written
        self._pending: list[str] = []
        self.identities = frozenset([identity(fd)])

    def write(self, text: str) -> None:
        self._pending.append(text)

    def flush(self) -> None:
        """Write what came since the last flush after the last complete record; on a
        failure (a full disk), cut the torn piece off again."""
        data = "".join(self._pending).encode(ENCODING, ERRORS)
        self._pending.clear()
        with blocked(HELD_SIGNALS):  # else a signal between write and ``end`` tears it
            try:
                if not self._started:
                    os.ftruncate(self.fd, self.end)
                    self._started = True
                write_at(self.fd, data, self.end)
            except OSError as exc:
                with contextlib.suppress(OSError):  # shrinking a file needs no space
                    os.ftruncate(self.fd, self.end)
                raise write_failed(self.path, exc) from None
            self.end += len(data)

    def release(self, completed: bool) -> None:
        """Unlock and close; a file this run made and never wrote is removed again."""
        if self._created and not completed and self.end == 0:
            with contextlib.suppress(OSError):
                os.unlink(self._target)
        os.close(self.fd)


def open_append(path: Path, *, resume: bool, overwrite: bool,
                scan: Callable[[BinaryIO], Held]) -> tuple[AppendFile, Held]:
    """``path`` opened and locked for this run, and what it holds (``scan`` reads an
    earlier run's records when resuming)."""
    fd, target, created = open_locked(path)
    try:
        held = Held()
        if check_writable(path, fd, resume=resume, overwrite=overwrite) and resume:
            with open(fd, "rb", closefd=False) as stream:
                held = scan(stream)
        return AppendFile(path, fd, target, created, held.end), held
    except BaseException:
        if created:
            os.unlink(target)
        os.close(fd)
        raise


class LinesOutput(Output):
    """An ``AppendFile`` as a run's output: ``writer`` (made by ``make_writer`` on it)
    continues after the records it holds."""

    def __init__(self, file: AppendFile, make_writer: Callable[..., RecordWriter],
                 held: Held):
        super().__init__(make_writer(file, held.records), held.paths, held.failed)
        self.file, self.path, self.identities = file, file.path, file.identities

    def release(self, completed: bool) -> None:
        self.file.release(completed)
