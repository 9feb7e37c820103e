"""Features as ``.npy``: an (N, 1536) float32 array of the images that decoded, and a
sidecar beside it, ``NAME.paths.jsonl``, listing every input in order:
``{"path": ..., "row": i}`` for an image (its row in the array) or
``{"path": ..., "error": "..."}`` for one that failed.

The array is streamed: its header has room for any shape (128 bytes, as ``np.save``
writes for two dimensions), and each image is written as: its row, then its sidecar
line, then the header's new row count. So the file is always a valid ``.npy`` of rows
the sidecar lists (``np.load``, also with ``mmap_mode``), and the sidecar, held and
resumed like predict's files (see ``locked``), is the source of truth: resuming cuts
the array back to the rows it accounts for and continues. A crash, a hard kill or a
full disk costs at most the image being written.
"""

from __future__ import annotations

import contextlib
import os
import struct
from pathlib import Path
from typing import BinaryIO

import numpy as np

from ..errors import OutputError
from .features import DIM, feature_vector
from .locked import (
    AppendFile,
    check_writable,
    identity,
    open_append,
    open_locked,
    write_at,
    write_failed,
)
from .records import Record
from .scanning import Lines, held_by, json_lines
from .writers import Output, RecordWriter, json_line, shown

HEADER = 128  # bytes before the first row
ROW = DIM * 4  # bytes per row
MAGIC = b"\x93NUMPY\x01\x00"


def sidecar_path(path: Path) -> Path:
    """The paths sidecar of the array ``path``: ``features.npy`` -> ``features.paths.jsonl``."""
    return path.with_name(f"{path.stem}.paths.jsonl")


def _header(rows: int) -> bytes:
    """A version 1.0 ``.npy`` header for (rows, 1536) float32, padded to ``HEADER``."""
    text = f"{{'descr': '<f4', 'fortran_order': False, 'shape': ({rows}, {DIM}), }}"
    body = text.ljust(HEADER - len(MAGIC) - 3) + "\n"
    return MAGIC + struct.pack("<H", len(body)) + body.encode("latin1")


def _rows_in(stream: BinaryIO, path: Path) -> int:
    """The row count of an array written here; anything else is refused."""
    try:
        if np.lib.format.read_magic(stream) != (1, 0):
            raise ValueError("another version")
        shape, fortran, dtype = np.lib.format.read_array_header_1_0(stream)
        if (dtype != np.dtype("<f4") or fortran or len(shape) != 2 or shape[1] != DIM
                or stream.tell() != HEADER):
            raise ValueError("another layout")
        return shape[0]
    except ValueError:
        raise OutputError(f"{shown(path)}: not a ({DIM},) float32 feature array written "
                          "by irv2; move the file away or fix it before resuming.") from None


class _SidecarLines:
    """Parses sidecar lines in order: the images' rows must count 0, 1, 2, ..."""

    def __init__(self):
        self.rows = 0

    def __call__(self, data: dict) -> Record:
        if data.keys() == {"path", "error"} and isinstance(data["error"], str):
            return Record(data["path"], error=data["error"])
        if data.keys() != {"path", "row"} or data["row"] != self.rows:
            raise ValueError("not a sidecar line")
        self.rows += 1
        return Record(data["path"])


class NpyWriter(RecordWriter):
    """Rows to the array ``fd``, one line per record to the sidecar (the stream)."""

    def __init__(self, sidecar: AppendFile, fd: int, path: Path, count: int, rows: int):
        super().__init__(sidecar, count)
        self.fd, self.path, self.rows = fd, path, rows
        self.started = False  # cut back to the rows the sidecar lists, header written

    def _start(self) -> None:
        if not self.started:
            self._do(os.ftruncate, self.fd, HEADER + self.rows * ROW)
            self._do(os.pwrite, self.fd, _header(self.rows), 0)
            self.started = True

    def _do(self, operation, *args) -> None:
        """``operation`` on the array; on a failure (a full disk) the row being written is
        cut off again."""
        try:
            operation(*args)
        except OSError as exc:
            with contextlib.suppress(OSError):  # shrinking a file needs no space
                os.ftruncate(self.fd, HEADER + self.rows * ROW)
            raise write_failed(self.path, exc) from None

    def write(self, record: Record) -> None:
        vector = feature_vector(record)
        self._start()
        if vector is None:
            line = {"path": record.path, "error": record.error}
        else:
            data = vector.astype("<f4").tobytes()
            self._do(write_at, self.fd, data, HEADER + self.rows * ROW)
            line = {"path": record.path, "row": self.rows}
        self.stream.write(json_line(line) + "\n")
        try:
            self.stream.flush()
        except OutputError:
            self._do(os.ftruncate, self.fd, HEADER + self.rows * ROW)
            raise
        if vector is not None:
            self.rows += 1
            self._do(os.pwrite, self.fd, _header(self.rows), 0)
        self.count += 1

    def close(self) -> None:
        self._start()
        super().close()


class NpyFeatures(Output):
    """The array and its sidecar, held for one run."""

    def __init__(self, path: Path, fd: int, target: str, created: bool, sidecar: AppendFile,
                 count: int, failed: int, done: set[str]):
        rows = count - failed
        super().__init__(NpyWriter(sidecar, fd, path, count, rows), done, failed)
        self.path, self.sidecar, self._fd = path, sidecar, fd
        self._target, self._created = target, created
        self.identities = frozenset([identity(fd), *sidecar.identities])

    def release(self, completed: bool) -> None:
        """Unlock and close both; files this run made and never wrote are removed."""
        try:
            self.sidecar.release(completed)
        finally:
            if self._created and not completed and not self.writer.started:
                with contextlib.suppress(OSError):
                    os.unlink(self._target)
            os.close(self._fd)


def _check_rows(path: Path, fd: int, size: int, rows: int) -> None:
    """The array must hold every row the sidecar lists, and no more (its header may lag
    one row behind: a crash before it was rewritten)."""
    held = 0
    if size:
        with open(fd, "rb", closefd=False) as stream:
            held = _rows_in(stream, path)
    if (size or rows) and not (rows - 1 <= held <= rows and size >= HEADER + rows * ROW):
        raise OutputError(f"{shown(path)} holds {held} rows but its sidecar "
                          f"{shown(sidecar_path(path))} lists {rows}: they are not one pair; "
                          "move them away or fix them before resuming.")


def open_npy(path: Path, *, resume: bool, overwrite: bool) -> NpyFeatures:
    """``path`` and its sidecar held for this run (see ``open_features``)."""
    fd, target, created = open_locked(path)
    try:
        size = check_writable(path, fd, resume=resume, overwrite=overwrite)
        parse = _SidecarLines()
        sidecar, held = open_append(
            sidecar_path(path), resume=resume, overwrite=overwrite,
            scan=lambda stream: held_by(json_lines(Lines(stream, sidecar_path(path)), parse)))
        try:
            if resume:
                _check_rows(path, fd, size, parse.rows)
            return NpyFeatures(path, fd, target, created, sidecar, held.records, held.failed,
                               held.paths)
        except BaseException:
            sidecar.release(completed=False)
            raise
    except BaseException:
        if created:
            os.unlink(target)
        os.close(fd)
        raise
