"""Features as Parquet: columns path (string), features (a fixed-size list of 1536
float32; null for an image that failed), error (string; null on success) and path_bytes
(binary; null unless the name is not UTF-8), written in row groups of ``ROW_GROUP``
records (about 1.5 MiB of features each).

A Parquet file can be read only once its footer is written, at close. So a run writes
a staged file beside the output (``.NAME.staged``) and puts it in place whole
(``store.atomic.place``: fsynced, then renamed) when the run ends: done, interrupted
(Ctrl-C, SIGTERM), or failed after writing records. Resuming reads each row group of
the complete file once, checking it as it copies it into the staged file (so a damaged
file is refused before the run starts), then appends; a resumed run with nothing new
leaves the file as it was. The output is locked, like predict's, while a
run holds it.

The trade-off: a hard kill (SIGKILL, power loss) or a full disk loses the rows that run
wrote. The previous complete file is untouched and resumable, and the next run removes
the staged leftover; but only ``.npy`` and ``.jsonl`` keep every completed record
through a hard kill. Resuming also costs a copy of the file, and since the file is
replaced rather than written in place, its mode and symlinks stay but hard links do not.

Parquet strings are UTF-8. A name that is UTF-8 is stored as it is in ``path``, with
``path_bytes`` null; one that is not has ``path`` as ``printable`` shows it (each byte
that is not UTF-8 as ``\\udcXX``) and its exact bytes in ``path_bytes``, which is what
resuming reads. So every name, even one holding the text ``\\udcff``, reads back as
itself.
"""

from __future__ import annotations

import contextlib
import os
import stat
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from ..errors import OutputError
from ..store.atomic import place
from .features import DIM, feature_vector
from .locked import check_writable, identity, is_at, open_locked, write_failed
from .records import Record
from .scanning import Held
from .writers import ENCODING, ERRORS, Output, RecordWriter, printable, shown, write_error

ROW_GROUP = 256
SCHEMA = pa.schema([("path", pa.string()),
                    ("features", pa.list_(pa.field("item", pa.float32()), DIM)),
                    ("error", pa.string()),
                    ("path_bytes", pa.binary())])
# Dictionary-encoded: the text columns only. Floats from a network almost never repeat,
# so a dictionary for ``features`` is built and thrown away for every page: without it
# a row group is written five times faster and the file is a quarter smaller.
NAMES = ["path", "error", "path_bytes"]
Row = tuple[str, np.ndarray | None, str | None, bytes | None]  # one row of SCHEMA


def stored_name(text: str | None, raw: bytes | None) -> str:
    """The name a row holds (its ``path`` and ``path_bytes``)."""
    if raw is not None:
        return raw.decode(ENCODING, ERRORS)
    if text is None:
        raise ValueError("a row without a path")
    return text


def name_columns(name: str) -> tuple[str, bytes | None]:
    """``path`` and ``path_bytes`` for ``name``: the bytes only when it is not UTF-8."""
    text = printable(name)
    return text, None if text == name else name.encode(ENCODING, ERRORS)


def staged_path(target: str) -> str:
    """Where a run writes the file before putting it in place at ``target``."""
    folder, name = os.path.split(target)
    return os.path.join(folder, f".{name}.staged")


def _not_features(path: Path, exc: Exception) -> OutputError:
    reason = (str(exc).splitlines() or [type(exc).__name__])[0]
    return OutputError(f"{shown(path)}: not a feature file written by irv2 ({reason}); move the "
                       "file away or fix it before resuming.")


def _group_records(group: pa.Table) -> Iterator[Record]:
    """The records of one row group; a row with both or neither of features and error
    is refused."""
    columns = (group["path"].to_pylist(), group["path_bytes"].to_pylist(),
               group["error"].to_pylist(), group["features"].is_null().to_pylist())
    for text, raw, error, failed in zip(*columns, strict=True):
        if failed != (error is not None):
            raise ValueError("a row with both or neither of features and error")
        yield Record(stored_name(text, raw), error=error)


def _open_staged(staged: str, fd: int):
    """The staged file, made afresh with the mode of the file held at ``fd`` (what a hard
    kill left is removed first); what fails (a directory in its place, a read-only
    folder) is one line, and leaves nothing behind."""
    try:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(staged)  # what a hard kill left
        staged_fd = os.open(staged, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC,
                            0o600)
    except OSError as exc:
        raise write_error(staged, exc) from None
    try:
        os.fchmod(staged_fd, stat.S_IMODE(os.fstat(fd).st_mode))
        return open(staged_fd, "wb")  # closed by release
    except OSError as exc:
        os.close(staged_fd)
        with contextlib.suppress(OSError):
            os.unlink(staged)
        raise write_error(staged, exc) from None


class ParquetWriter(RecordWriter):
    """Records to the staged file (the stream), a row group per ``ROW_GROUP``; ``close``
    puts it in place at ``target``. When resuming, ``copy_held`` first copies in the
    file held at ``fd``."""

    def __init__(self, path: Path, fd: int, target: str):
        staged = staged_path(target)
        super().__init__(_open_staged(staged, fd))
        self.path, self.fd, self.target, self.staged = path, fd, target, staged
        self.resumed = self.added = self.placed = self.broken = False
        self._parquet: pq.ParquetWriter | None = None
        self._rows: list[Row] = []

    def copy_held(self) -> Held:
        """What the complete file held at ``fd`` holds, copied into the staged file: each
        row group is read once, checked, then written, so resuming decodes the file once
        and a damaged or foreign one is refused here, before the run starts."""
        held = Held()
        try:
            with open(self.fd, "rb", closefd=False) as stream:
                parquet = pq.ParquetFile(stream)
                if not parquet.schema_arrow.equals(SCHEMA):
                    raise ValueError("its columns are not path, features, error, path_bytes")
                for index in range(parquet.num_row_groups):
                    group = parquet.read_row_group(index)
                    for record in _group_records(group):
                        held.add(record, 0)
                    self._guarded(self._copy, group)
        except (pa.ArrowException, OSError, ValueError) as exc:  # thrift's errors are OSError
            raise _not_features(self.path, exc) from None
        self.count, self.resumed = held.records, bool(held.records)
        return held

    def write(self, record: Record) -> None:
        self._rows.append(feature_row(record))
        self.count += 1
        self.added = True
        if len(self._rows) >= ROW_GROUP:
            self._guarded(self._flush_rows)

    def close(self) -> None:
        """Finish the file and put it in place; a resumed run with nothing new, or one
        whose writes failed, leaves the file as it was."""
        if self.broken or (self.resumed and not self.added):
            return
        self._guarded(self._finish)
        self.placed = True

    def discard(self) -> None:
        """Close the staged file unfinished (no footer) and remove it."""
        if self._parquet is not None:
            self._parquet.is_open = False  # else its close, even at exit, writes a footer
        with contextlib.suppress(OSError):  # a full disk fails its flush again
            self.stream.close()
        with contextlib.suppress(OSError):
            os.unlink(self.staged)

    def _guarded(self, operation, *args) -> None:
        try:
            operation(*args)
        except OSError as exc:  # a full disk: this run's rows are lost, the file is not
            self.broken = True
            raise write_failed(self.path, exc) from None

    def _start(self) -> pq.ParquetWriter:
        if self._parquet is None:
            self._parquet = pq.ParquetWriter(self.stream, SCHEMA, use_dictionary=NAMES)
        return self._parquet

    def _copy(self, group: pa.Table) -> None:
        self._start().write_table(group)

    def _flush_rows(self) -> None:
        writer = self._start()
        if self._rows:
            writer.write_table(feature_table(self._rows))
            self._rows.clear()

    def _finish(self) -> None:
        self._flush_rows()
        self._start().close()
        self.stream.close()
        place(self.staged, self.target)


def feature_row(record: Record) -> Row:
    """``record`` as a row of ``SCHEMA``."""
    error = None if record.error is None else printable(record.error)
    text, raw = name_columns(record.path)
    return text, feature_vector(record), error, raw


def feature_table(rows: list[Row]) -> pa.Table:
    """``rows`` as a table of ``SCHEMA`` (one row group's worth)."""
    texts, vectors, errors, raws = zip(*rows, strict=True)
    values = np.zeros((len(rows), DIM), dtype=np.float32)
    for i, vector in enumerate(vectors):
        if vector is not None:
            values[i] = vector
    features = pa.FixedSizeListArray.from_arrays(
        pa.array(values.ravel()), DIM, mask=pa.array([v is None for v in vectors]))
    return pa.Table.from_arrays([pa.array(texts, pa.string()), features,
                                 pa.array(errors, pa.string()),
                                 pa.array(raws, pa.binary())], schema=SCHEMA)


class ParquetFeatures(Output):
    """A Parquet feature file held for one run (see the module's docstring)."""

    def __init__(self, path: Path, fd: int, target: str, created: bool, resume: bool):
        writer = ParquetWriter(path, fd, target)
        try:
            held = writer.copy_held() if resume else Held()
        except BaseException:
            writer.discard()
            raise
        super().__init__(writer, held.paths, held.failed)
        self.path, self._fd, self._target, self._created = path, fd, target, created
        self.identities = frozenset(map(identity, (fd, self.writer.stream.fileno())))

    def release(self, completed: bool) -> None:
        """Unlock; remove the staged file unless it was put in place, and the empty file
        this run made to hold the lock unless something took its place."""
        writer = self.writer
        try:
            if not writer.placed:
                writer.discard()
                if self._created and is_at(self._fd, self._target):
                    with contextlib.suppress(OSError):
                        os.unlink(self._target)
        finally:
            os.close(self._fd)


def open_parquet(path: Path, *, resume: bool, overwrite: bool) -> ParquetFeatures:
    """``path`` held for this run as a Parquet feature file (see ``open_features``)."""
    fd, target, created = open_locked(path)
    try:
        size = check_writable(path, fd, resume=resume, overwrite=overwrite)
        return ParquetFeatures(path, fd, target, created, bool(resume and size))
    except BaseException:
        if created:
            os.unlink(target)
        os.close(fd)
        raise
