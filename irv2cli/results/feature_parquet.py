"""Features as Parquet: columns path (string), features (a fixed-size list of 1536
float32; null for an image that failed) and error (string; null on success), written
in row groups of ``ROW_GROUP`` records (about 1.5 MiB of features each).

A Parquet file can be read only once its footer is written, at close. So a run writes
a staged file beside the output (``.NAME.staged``) and puts it in place whole
(``store.atomic.place``: fsynced, then renamed) when the run ends: done, interrupted
(Ctrl-C, SIGTERM), or failed after writing records. Resuming copies the complete file's
row groups into the staged file, then appends; a resumed run with nothing new leaves
the file as it was. The output is locked, like predict's, while a run holds it.

The trade-off: a hard kill (SIGKILL, power loss) or a full disk loses the rows that run
wrote. The previous complete file is untouched and resumable, and the next run removes
the staged leftover; but only ``.npy`` and ``.jsonl`` keep every completed record
through a hard kill. Resuming also costs a copy of the file, and since the file is
replaced rather than written in place, its mode and symlinks stay but hard links do not.

Parquet strings are UTF-8: a file name that is not is stored with ``\\udcXX`` escapes (as
``printable`` shows it), and read back as the same name when resuming.
"""

from __future__ import annotations

import contextlib
import os
import re
import stat
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from ..errors import OutputError
from ..store.atomic import place
from .features import DIM, feature_vector
from .locked import check_writable, identity, open_locked, write_failed
from .records import Record
from .scanning import Held, held_by
from .writers import Output, RecordWriter, printable, shown

ROW_GROUP = 256
SCHEMA = pa.schema([("path", pa.string()),
                    ("features", pa.list_(pa.field("item", pa.float32()), DIM)),
                    ("error", pa.string())])
_ESCAPE = re.compile(r"\\u(d[89a-f][0-9a-f]{2})")


def _unescape(text: str) -> str:
    """A name as ``printable`` wrote it, with its ``\\udcXX`` escapes turned back."""
    return _ESCAPE.sub(lambda match: chr(int(match[1], 16)), text)


def staged_path(target: str) -> str:
    """Where a run writes the file before putting it in place at ``target``."""
    folder, name = os.path.split(target)
    return os.path.join(folder, f".{name}.staged")


def _not_features(path: Path, exc: Exception) -> OutputError:
    reason = (str(exc).splitlines() or [type(exc).__name__])[0]
    return OutputError(f"{shown(path)}: not a feature file written by irv2 ({reason}); move the "
                       "file away or fix it before resuming.")


def _scan(path: Path, fd: int) -> Held:
    """The path keys and errors of a complete feature file; anything else is refused."""
    try:
        with open(fd, "rb", closefd=False) as stream:
            parquet = pq.ParquetFile(stream)
            if not parquet.schema_arrow.equals(SCHEMA):
                raise ValueError("its columns are not path, features, error")
            table = parquet.read(columns=["path", "error"])
    except (pa.ArrowException, ValueError) as exc:
        raise _not_features(path, exc) from None
    return held_by((Record(_unescape(name), error=error), 0) for name, error in
                   zip(table["path"].to_pylist(), table["error"].to_pylist(), strict=True))


class ParquetWriter(RecordWriter):
    """Records to the staged file (the stream), a row group per ``ROW_GROUP``; ``close``
    puts it in place at ``target``. When ``resumed``, the file held at ``fd`` is copied
    in first."""

    def __init__(self, path: Path, fd: int, target: str, count: int, resumed: bool):
        staged = staged_path(target)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(staged)  # what a hard kill left
        staged_fd = os.open(staged, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC,
                            0o600)
        os.fchmod(staged_fd, stat.S_IMODE(os.fstat(fd).st_mode))
        super().__init__(open(staged_fd, "wb"), count)  # noqa: SIM115 (closed by release)
        self.path, self.fd, self.target, self.staged = path, fd, target, staged
        self.resumed, self.placed, self.broken = resumed, False, False
        self._parquet: pq.ParquetWriter | None = None
        self._rows: list[tuple[str, np.ndarray | None, str | None]] = []

    def write(self, record: Record) -> None:
        vector = feature_vector(record)
        error = None if record.error is None else printable(record.error)
        self._rows.append((printable(record.path), vector, error))
        self.count += 1
        if len(self._rows) >= ROW_GROUP:
            self._guarded(self._flush_rows)

    def close(self) -> None:
        """Finish the file and put it in place; a resumed run with nothing new, or one
        whose writes failed, leaves the file as it was."""
        if self.broken or (self.resumed and self._parquet is None and not self._rows):
            return
        self._guarded(self._finish)
        place(self.staged, self.target)
        self.placed = True

    def _guarded(self, operation) -> None:
        try:
            operation()
        except OSError as exc:  # a full disk: this run's rows are lost, the file is not
            self.broken = True
            raise write_failed(self.path, exc) from None

    def _start(self) -> pq.ParquetWriter:
        if self._parquet is None:
            self._parquet = pq.ParquetWriter(self.stream, SCHEMA)
            if self.resumed:
                with open(self.fd, "rb", closefd=False) as stream:
                    held = pq.ParquetFile(stream)
                    for group in range(held.num_row_groups):
                        self._parquet.write_table(held.read_row_group(group))
        return self._parquet

    def _flush_rows(self) -> None:
        writer = self._start()
        if self._rows:
            writer.write_table(_table(self._rows))
            self._rows.clear()

    def _finish(self) -> None:
        self._flush_rows()
        self._start().close()
        self.stream.close()


def _table(rows: list[tuple[str, np.ndarray | None, str | None]]) -> pa.Table:
    """One row group of ``SCHEMA``."""
    values = np.zeros((len(rows), DIM), dtype=np.float32)
    for i, (_, vector, _) in enumerate(rows):
        if vector is not None:
            values[i] = vector
    features = pa.FixedSizeListArray.from_arrays(
        pa.array(values.ravel()), DIM, mask=pa.array([v is None for _, v, _ in rows]))
    return pa.Table.from_arrays([pa.array([p for p, _, _ in rows], pa.string()), features,
                                 pa.array([e for _, _, e in rows], pa.string())],
                                schema=SCHEMA)


class ParquetFeatures(Output):
    """A Parquet feature file held for one run (see the module's docstring)."""

    def __init__(self, path: Path, fd: int, target: str, created: bool, held: Held):
        super().__init__(ParquetWriter(path, fd, target, held.records, bool(held.records)),
                         held.paths, held.failed)
        self.path, self._fd, self._target, self._created = path, fd, target, created
        self.identities = frozenset(map(identity, (fd, self.writer.stream.fileno())))

    def release(self, completed: bool) -> None:
        """Unlock; remove the staged file unless it was put in place, and the empty file
        this run made to hold the lock unless something took its place."""
        writer = self.writer
        try:
            if not writer.placed:
                writer.stream.close()
                with contextlib.suppress(OSError):
                    os.unlink(writer.staged)
                if self._created:
                    with contextlib.suppress(OSError):
                        os.unlink(self._target)
        finally:
            os.close(self._fd)


def open_parquet(path: Path, *, resume: bool, overwrite: bool) -> ParquetFeatures:
    """``path`` held for this run as a Parquet feature file (see ``open_features``)."""
    fd, target, created = open_locked(path)
    try:
        size = check_writable(path, fd, resume=resume, overwrite=overwrite)
        held = _scan(path, fd) if resume and size else Held()
        return ParquetFeatures(path, fd, target, created, held)
    except BaseException:
        if created:
            os.unlink(target)
        os.close(fd)
        raise
