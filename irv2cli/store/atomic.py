"""The one way irv2cli puts a file in place: staged beside it, then renamed durably.

A reader sees the old file or the complete new one, never a half-written one, and
after a crash or power loss the rename has either happened with all the bytes behind
it or not at all.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO


def fsync_path(path: str | os.PathLike) -> None:
    """Flush a file's (or a folder's entries') data to the disk."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def place(staged: str | os.PathLike, target: str | os.PathLike) -> None:
    """Move ``staged`` (a file or a folder beside ``target``) onto ``target`` durably:
    its data (a folder's every file) is on the disk before the rename, and the rename
    before this returns."""
    for folder, _, names in os.walk(staged):
        for name in names:
            fsync_path(os.path.join(folder, name))
    fsync_path(staged)
    os.replace(staged, target)
    fsync_path(Path(target).parent)


def place_new(staged: str | os.PathLike, target: str | os.PathLike) -> None:
    """Put the file ``staged`` (beside ``target``) at ``target`` durably, never over
    anything: ``FileExistsError`` if ``target`` exists, even if it was made meanwhile.
    ``staged`` is linked to ``target``, then its own name removed."""
    fsync_path(staged)
    os.link(staged, target)
    os.unlink(staged)
    fsync_path(Path(target).parent)


@contextlib.contextmanager
def atomic_file(path: str | os.PathLike, mode: int = 0o644, replace: bool = True
                ) -> Iterator[BinaryIO]:
    """A temporary file beside ``path``, placed onto it (permissions ``mode``) only if the
    block succeeds; otherwise removed, and ``path`` is left as it was.

    ``replace=False``: an existing ``path`` is never replaced, even one made while the
    block ran: ``FileExistsError`` (see ``place_new``)."""
    path = Path(path)
    fd, staged = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as stream:
            yield stream
        os.chmod(staged, mode)
        (place if replace else place_new)(staged, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(staged)
        raise
