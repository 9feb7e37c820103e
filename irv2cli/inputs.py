"""Turn command-line inputs (files and folders) into a deterministic stream of file paths."""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import PurePath


@dataclass(frozen=True)
class InputSelection:
    """Which files of a folder to take."""

    recursive: bool = True
    globs: tuple[str, ...] = ()
    include_hidden: bool = False
    excluded: frozenset[tuple[int, int]] = frozenset()  # (device, inode): the output file

    def wants(self, relative_path: str) -> bool:
        if not self.globs:
            return True
        return any(PurePath(relative_path).match(pattern) for pattern in self.globs)


def path_key(path: str) -> str:
    """One spelling of a path for comparing runs: ``photos/a.jpg``, ``./photos/a.jpg`` and
    the absolute path are the same file to ``--resume``."""
    return os.path.abspath(path)


def _is_hidden(name: str) -> bool:
    return name.startswith(".")


def _is_excluded(path: str | os.DirEntry, selection: InputSelection) -> bool:
    """Whether ``path`` is one of the files ``selection`` leaves out (the output itself)."""
    if not selection.excluded:
        return False
    try:
        info = path.stat() if isinstance(path, os.DirEntry) else os.stat(path)
    except OSError:
        return False
    return (info.st_dev, info.st_ino) in selection.excluded


def _walk(folder: str, root: str, selection: InputSelection, seen: set) -> Iterator[str]:
    """Files under ``folder`` in sorted order, following symlinks but never in a loop."""
    try:
        info = os.stat(folder)
        entries = sorted(os.scandir(folder), key=lambda e: e.name)
    except OSError:
        yield folder  # unreadable folder: reported as an error for that path
        return
    key = (info.st_dev, info.st_ino)
    if key in seen:
        return  # a symlink loop leads back to a folder on the current path
    seen.add(key)
    for entry in entries:
        if _is_hidden(entry.name) and not selection.include_hidden:
            continue
        if entry.is_dir():
            if selection.recursive:
                yield from _walk(entry.path, root, selection, seen)
        elif (selection.wants(os.path.relpath(entry.path, root))
              and not _is_excluded(entry, selection)):
            yield entry.path
    seen.discard(key)


def iter_image_paths(inputs: Iterable[str], selection: InputSelection = InputSelection()
                     ) -> Iterator[str]:
    """Each file input as given; each folder expanded per ``selection``; never a file
    ``selection`` excludes.

    A path that does not exist is passed through, so it gets its own error record.
    """
    for path in inputs:
        if os.path.isdir(path):
            yield from _walk(path, path, selection, set())
        elif not _is_excluded(path, selection):
            yield path
