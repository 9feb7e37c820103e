"""Turn command-line inputs (files, folders and URIs) into a deterministic stream of file
paths."""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import PurePath

from .uris import is_uri, local_path, local_uri, walk_uri


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
    the absolute path are the same file to ``--resume``. A URI is its own key."""
    return path if is_uri(path) else os.path.abspath(path)


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


def _is_folder(entry: os.DirEntry) -> bool:
    """Whether ``entry`` is a folder, following symlinks; a link that cannot be followed
    (a loop of links, ``ELOOP``) is not, so it gets its own error record as a file."""
    try:
        return entry.is_dir()
    except OSError:
        return False


def _entries(folder: str) -> tuple[tuple[int, int], list[os.DirEntry]] | None:
    """``folder``'s (device, inode) and its entries sorted by name; None if unreadable."""
    try:
        info = os.stat(folder)
        return (info.st_dev, info.st_ino), sorted(os.scandir(folder), key=lambda e: e.name)
    except OSError:
        return None


def _walk(folder: str, root: str, selection: InputSelection) -> Iterator[str]:
    """Files under ``folder`` in sorted order, following symlinks but never in a loop.

    The walk keeps its own stack rather than recursing, so no depth of nesting is too
    deep for it."""
    seen: set[tuple[int, int]] = set()  # the folders on the current path
    stack: list[tuple[tuple[int, int], Iterator[os.DirEntry]]] = []
    enter: str | None = folder
    while True:
        if enter is not None:
            opened = _entries(enter)
            if opened is None:
                yield enter  # unreadable folder: reported as an error for that path
            elif opened[0] not in seen:  # else a symlink loop leads back to it
                seen.add(opened[0])
                stack.append((opened[0], iter(opened[1])))
            enter = None
        if not stack:
            return
        key, entries = stack[-1]
        entry = next(entries, None)
        if entry is None:
            stack.pop()
            seen.discard(key)
        elif _is_hidden(entry.name) and not selection.include_hidden:
            continue
        elif _is_folder(entry):
            if selection.recursive:
                enter = entry.path
        elif (selection.wants(os.path.relpath(entry.path, root))
              and not _is_excluded(entry, selection)):
            yield entry.path


def _once(inputs: Iterable[str]) -> Iterator[str]:
    """``inputs`` without the ones that name an earlier input again."""
    seen: set[str] = set()
    for path in inputs:
        key = path_key(path)
        if key not in seen:
            seen.add(key)
            yield path


def iter_image_paths(inputs: Iterable[str], selection: InputSelection = InputSelection()
                     ) -> Iterator[str]:
    """Each file input as given; each folder expanded per ``selection``; never a file
    ``selection`` excludes. An input given twice (``photos ./photos``) is taken once.

    A URI input (``s3://bucket/photos/``, see ``uris``) is listed the same way, one folder
    at a time, and its files come as URIs. A path or URI that does not exist is passed
    through, so it gets its own error record.
    """
    for path in _once(inputs):
        uri = is_uri(path)
        local = local_path(path) if uri else path  # a file:// URI is a local path
        if local is None:
            yield from walk_uri(path, selection)
        elif os.path.isdir(local):
            found = _walk(local, local, selection)
            yield from (local_uri(file, path) for file in found) if uri else found
        elif not _is_excluded(local, selection):
            yield path
