"""Results files: pick the format, hold the file for one run, resume after a crash.

The file is opened once and locked (``flock`` on the file itself) for the whole run, so
a second run on it is refused at once. It is never replaced, so its inode, mode, links
and lock stay; a symlink is followed, so the results go to its target. Resuming first
streams the whole file as bytes (a crash may have cut a character in two), checks every
record and finds where the last complete one ends; the first write truncates the file
there and appends. Nothing is created or truncated before the first record (or the end
of the run): a run that fails before that leaves an existing file as it was, and
removes the empty file it made.
"""

from __future__ import annotations

import contextlib
import csv
import fcntl
import json
import os
import stat
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from itertools import groupby
from pathlib import Path
from typing import BinaryIO

from ..errors import OutputError
from ..inputs.paths import path_key
from .labels import Prediction
from .records import Record
from .writers import (
    CSV_FIELDS,
    CSV_HEADER,
    ENCODING,
    ERRORS,
    WRITERS,
    Output,
    os_reason,
    shown,
    write_error,
)

EXTENSIONS = {".csv": "csv", ".jsonl": "jsonl", ".ndjson": "jsonl", ".json": "json"}
MAX_LINE = 1 << 24  # no record comes near 16 MiB: a longer line is not ours
JSON_START = b'{"path": '  # how every JSON record we write begins
KINDS = {stat.S_ISDIR: "a directory", stat.S_ISFIFO: "a FIFO (named pipe)",
         stat.S_ISCHR: "a character device", stat.S_ISBLK: "a block device",
         stat.S_ISSOCK: "a socket"}


def output_format(path: Path, fmt: str | None = None) -> str:
    """``fmt`` if given, else the format the file's extension names."""
    if fmt:
        return fmt
    try:
        return EXTENSIONS[path.suffix.lower()]
    except KeyError:
        raise OutputError(
            f"{path}: cannot tell the format from the extension; use .csv, .jsonl or .json, "
            "or pass --format."
        ) from None


@dataclass
class Held:
    """What a results file holds: its records' path keys, how many of them are errors,
    how many records, and the byte offset where the last complete one ends."""

    paths: set[str] = field(default_factory=set)
    failed: int = 0
    records: int = 0
    end: int = 0

    def add(self, record: Record, end: int) -> None:
        self.paths.add(path_key(record.path))
        self.failed += record.error is not None
        self.records += 1
        self.end = end


def _not_results(path: Path, line: int) -> OutputError:
    return OutputError(f"{shown(path)}: line {line} is not a result record; move the "
                       "file away or fix it before resuming.")


class _Lines:
    """A file's complete lines, with ``end`` (the offset after the last one returned) and
    ``number``; what follows the last newline is kept as ``tail``, cut by a crash."""

    def __init__(self, stream: BinaryIO, path: Path):
        self.stream, self.path = stream, path
        self.end = self.number = 0
        self.tail = b""
        self.done = False

    def __iter__(self) -> _Lines:
        return self

    def __next__(self) -> bytes:
        if self.done:
            raise StopIteration
        line = self.stream.readline(MAX_LINE)
        if not line.endswith(b"\n"):
            if self.stream.read(1):  # not the end of the file: a line longer than any record
                raise _not_results(self.path, self.number + 1)
            self.tail, self.done = line, True
            raise StopIteration
        self.number += 1
        self.end += len(line)
        return line

    def check_tail(self, start: bytes) -> None:
        """A torn tail is dropped only if it is the start of what we write (``start``)."""
        if self.tail and not (self.tail.startswith(start) or start.startswith(self.tail)):
            raise _not_results(self.path, self.number + 1)


def _json_record(text: bytes, path: Path, line: int) -> Record:
    try:
        data = json.loads(text.decode(ENCODING, ERRORS))
        predictions = [Prediction(**p) for p in data["predictions"] or []]
        if not isinstance(data["path"], str):
            raise TypeError("path")
        return Record(data["path"], predictions, data["error"])
    except (ValueError, KeyError, TypeError, AttributeError):
        raise _not_results(path, line) from None


def _jsonl_records(lines: _Lines, path: Path, top_k: int) -> Iterator[tuple[Record, int]]:
    for line in lines:
        yield _json_record(line, path, lines.number), lines.end
    lines.check_tail(JSON_START)


def _json_array_records(lines: _Lines, path: Path, top_k: int
                        ) -> Iterator[tuple[Record, int]]:
    """Records of ``[\\n{...},\\n{...}\\n]\\n``; each ends at its ``}``, where the next
    ``,\\n`` (or the closing ``\\n]``) is written."""
    first = next(lines, None)
    if first is None:
        lines.check_tail(b"[\n")
        return
    if first.strip() == b"[]":
        _check_blank(lines, path)
        return
    if first.strip() != b"[":
        raise _not_results(path, 1)
    for line in lines:
        body = line.rstrip()
        if body == b"]":
            _check_blank(lines, path)
            return
        body = body.removesuffix(b",")
        yield _json_record(body, path, lines.number), lines.end - len(line) + len(body)
    tail = lines.tail.rstrip().removesuffix(b",")
    if tail in (b"", b"]"):
        return
    try:  # written whole, but not yet followed by the next ",\n"
        yield _json_record(tail, path, lines.number + 1), lines.end + len(tail)
    except OutputError:
        lines.check_tail(JSON_START)


def _check_blank(lines: _Lines, path: Path) -> None:
    """Nothing but blank lines may follow the closing ``]``."""
    for line in lines:
        if line.strip():
            raise _not_results(path, lines.number)
    if lines.tail.strip():
        raise _not_results(path, lines.number + 1)


def _csv_rows(lines: _Lines) -> Iterator[tuple[list[str], int, int]]:
    """(row, offset after it, line number) for each complete row."""
    for row in csv.reader(line.decode(ENCODING, ERRORS) for line in lines):
        if lines.done:
            return  # the file ended inside a quoted field: a row the crash cut
        yield row, lines.end, lines.number


def _csv_records(lines: _Lines, path: Path, top_k: int) -> Iterator[tuple[Record, int]]:
    """Records of a results CSV: consecutive rows of one path. The last image's rows end
    the file, so fewer than ``top_k`` of them (and no error) is a record a crash cut;
    after the header, whatever follows the last newline is a row a crash cut."""
    first = next(lines, None)
    if first is None:
        lines.check_tail(CSV_HEADER.encode(ENCODING))
        return
    if next(csv.reader([first.decode(ENCODING, ERRORS)])) != list(CSV_FIELDS):
        raise OutputError(f"{shown(path)}: not a results CSV (its header is not "
                          f"{','.join(CSV_FIELDS)}); move it away or choose another --output.")
    last = None
    for _, group in groupby(_csv_rows(lines), key=lambda item: item[0][0]):
        if last is not None:
            yield last
        rows = list(group)
        last = _csv_record([row for row, _, _ in rows], path, rows[0][2]), rows[-1][1]
    if last is not None and (last[0].error or len(last[0].predictions) >= top_k):
        yield last


def _csv_record(rows: list[list[str]], path: Path, line: int) -> Record:
    try:
        fields = [dict(zip(CSV_FIELDS, row, strict=True)) for row in rows]
        if fields[0]["error"]:
            return Record(fields[0]["path"], error=fields[0]["error"])
        return Record(fields[0]["path"], [
            Prediction(int(f["rank"]), int(f["index"]), f["wnid"], f["label"],
                       float(f["score"])) for f in fields])
    except ValueError:
        raise _not_results(path, line) from None


RECORDS: dict[str, Callable[[_Lines, Path, int], Iterator[tuple[Record, int]]]] = {
    "jsonl": _jsonl_records, "json": _json_array_records, "csv": _csv_records}


def _check_top_k(record: Record, path: Path, top_k: int) -> None:
    k = len(record.predictions)
    if k and k != top_k:
        raise OutputError(f"{shown(path)} holds results for -k {k}: resume with "
                          f"-k {k}, or write -k {top_k} to another --output.")


def scan_results(stream: BinaryIO, path: Path, fmt: str, top_k: int) -> Held:
    """Check every record an earlier run left in ``stream`` and find where the last
    complete one ends; refuse a file that is not results, or holds another ``-k``."""
    held = Held()
    for record, end in RECORDS[fmt](_Lines(stream, path), path, top_k):
        _check_top_k(record, path, top_k)
        held.add(record, end)
    return held


def _check_regular(path: Path, mode: int) -> None:
    for test, kind in KINDS.items():
        if test(mode):
            raise OutputError(f"{shown(path)} is {kind}, not a regular file: "
                              "choose a file for --output.")


def _open(target: str) -> tuple[int, bool]:
    """``target`` opened for reading and writing, and whether this call created it."""
    flags = os.O_RDWR | os.O_NONBLOCK | os.O_CLOEXEC
    while True:  # until it either exists or is ours
        with contextlib.suppress(FileNotFoundError):
            return os.open(target, flags), False
        with contextlib.suppress(FileExistsError):
            return os.open(target, flags | os.O_CREAT | os.O_EXCL, 0o666), True


def _open_locked(path: Path, target: str) -> tuple[int, bool]:
    """``target`` (``path`` with symlinks followed) opened and locked, and whether this
    call created it; what is not a regular file is refused before it is opened."""
    try:
        with contextlib.suppress(FileNotFoundError):
            _check_regular(path, os.stat(target).st_mode)
        fd, created = _open(target)
    except OSError as exc:
        raise OutputError(f"{shown(path)}: cannot write results "
                          f"({os_reason(exc)}).") from None
    try:
        _check_regular(path, os.fstat(fd).st_mode)
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise OutputError(f"{shown(path)} is being written by another irv2 run; "
                          "wait for it to finish, or choose another --output.") from None
    except BaseException:
        os.close(fd)
        raise
    return fd, created


def open_results(path: Path, fmt: str, *, resume: bool, overwrite: bool, top_k: int
                 ) -> ResultsFile:
    """``path`` opened and locked for this run, holding what an earlier run wrote when
    resuming. An empty file counts as missing; any other existing file needs ``resume``
    or ``overwrite``; what is not a regular file is refused before anything is read."""
    target = os.path.realpath(path)
    fd, created = _open_locked(path, target)
    try:
        size = os.fstat(fd).st_size
        if size and not (resume or overwrite):
            raise OutputError(f"{shown(path)} already exists: pass --resume to "
                              "continue that run, or --overwrite to replace it.")
        held = Held()
        if resume and size:
            with open(fd, "rb", closefd=False) as stream:
                held = scan_results(stream, path, fmt, top_k)
        return ResultsFile(path, target, fd, created, fmt, held)
    except BaseException:
        if created:
            os.unlink(target)
        os.close(fd)
        raise


def _write_at(fd: int, data: bytes, offset: int) -> None:
    view = memoryview(data)
    while view:
        written = os.pwrite(fd, view, offset)
        view, offset = view[written:], offset + written


class ResultsFile(Output):
    """A locked results file, written in place after its last complete record: the
    writer's stream, each flush one piece (a record, or the closing ``]``)."""

    def __init__(self, path: Path, target: str, fd: int, created: bool, fmt: str,
                 held: Held):
        super().__init__(WRITERS[fmt](self, held.records), held.paths, held.failed)
        self.path, self._target, self._fd, self._created = path, target, fd, created
        self._end = held.end  # everything before it is complete records
        self._started = False  # truncated to _end, then written
        self._pending: list[str] = []
        info = os.fstat(fd)
        self.identity = (info.st_dev, info.st_ino)

    def write(self, text: str) -> None:
        self._pending.append(text)

    def flush(self) -> None:
        """Write what came since the last flush after the last complete record; on a
        failure (a full disk), cut the torn piece off again."""
        data = "".join(self._pending).encode(ENCODING, ERRORS)
        self._pending.clear()
        try:
            if not self._started:
                os.ftruncate(self._fd, self._end)
                self._started = True
            _write_at(self._fd, data, self._end)
        except OSError as exc:
            with contextlib.suppress(OSError):  # shrinking a file needs no space
                os.ftruncate(self._fd, self._end)
            raise write_error(str(self.path), exc, " with --resume") from None
        self._end += len(data)

    def release(self, completed: bool) -> None:
        """Unlock and close; a file this run made and never wrote is removed again."""
        if self._created and not completed and self._end == 0:
            with contextlib.suppress(OSError):
                os.unlink(self._target)
        os.close(self._fd)
