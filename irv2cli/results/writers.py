"""Write records: JSON, JSON Lines and CSV, each record written and flushed as one piece.

Paths are Python's file-system strings, so a name that is not valid UTF-8 holds lone
surrogates (``os.fsdecode``). JSON writes them as ``\\udcXX`` escapes, which ``json.loads``
and ``os.fsencode`` turn back into the name's exact bytes; CSV writes the name's own bytes,
so a CSV file is UTF-8 except where a name is not.
"""

from __future__ import annotations

import csv
import errno
import io
import json
import os
import sys
from abc import ABC, abstractmethod
from typing import BinaryIO, TextIO

from ..errors import Hint, OutputError
from .records import Record

CSV_FIELDS = ("path", "rank", "index", "wnid", "label", "score", "error")
ENCODING, ERRORS = "utf-8", "surrogateescape"  # how text becomes bytes in every output
NO_SPACE = (errno.ENOSPC, errno.EDQUOT)


def printable(text: str) -> str:
    """``text`` with the lone surrogates of a non-UTF-8 file name as ``\\udcXX`` escapes,
    so it can be printed or encoded as UTF-8."""
    return text.encode(ENCODING, "backslashreplace").decode(ENCODING)


_CONTROLS = {c: f"\\x{c:02x}" for c in (*range(0x20), *range(0x7F, 0xA0))}


def shown(text: str | os.PathLike) -> str:
    """``text`` as a message may show it on a terminal: ``printable``, and control
    characters as ``\\xNN``, so a file name can neither break a one-line message nor
    send escape sequences to the terminal."""
    return printable(os.fspath(text)).translate(_CONTROLS)


def os_reason(exc: OSError) -> str:
    """An OS error's reason as a message says it: ``no space left on device``."""
    reason = exc.strerror or str(exc)
    return reason[:1].lower() + reason[1:]


def write_error(name: str, exc: OSError, hint: Hint | None = None) -> OutputError:
    """The one-line error for a failed write to ``name``: what went wrong, what to do
    (``hint``: what to do after the fix; without one, run again)."""
    fix = "free space" if exc.errno in NO_SPACE else "fix that"
    if hint is not None:
        return OutputError(f"{shown(name)}: {os_reason(exc)}; {fix}", hint=hint)
    return OutputError(f"{shown(name)}: {os_reason(exc)}; {fix} and run again.")


class RecordWriter(ABC):
    """Base writer: ``write`` each record, then ``close`` (which leaves the stream open).

    ``count`` is how many records the stream holds (a resumed file starts with some).
    """

    def __init__(self, stream: TextIO, count: int = 0):
        self.stream = stream
        self.count = count

    @abstractmethod
    def write(self, record: Record) -> None:
        """Write one record and flush it."""

    def close(self) -> None:
        self.stream.flush()


class TextWriter(RecordWriter):
    """Records as text: ``opening`` before the first, ``separator`` between two, and each
    record with what precedes it written and flushed as one piece."""

    opening = ""
    separator = ""

    @abstractmethod
    def encode(self, record: Record) -> str:
        """One record's text."""

    def write(self, record: Record) -> None:
        self.stream.write((self.separator if self.count else self.opening)
                          + self.encode(record))
        self.stream.flush()
        self.count += 1

    def closing(self) -> str:
        """What ends the stream; with no records, the opening alone (a CSV header)."""
        return "" if self.count else self.opening

    def close(self) -> None:
        self.stream.write(self.closing())
        super().close()


def json_line(data: dict) -> str:
    """``data`` as one line of JSON, non-UTF-8 name bytes as ``\\udcXX`` escapes."""
    return printable(json.dumps(data, ensure_ascii=False))


def json_text(record: Record) -> str:
    """One record as one line of JSON, as predict writes it."""
    return json_line(record.to_dict())


class JsonLinesWriter(TextWriter):
    """One JSON object per line."""

    def encode(self, record: Record) -> str:
        return json_text(record) + "\n"


class JsonArrayWriter(TextWriter):
    """One JSON array, written element by element; ``[]`` when there are no records."""

    opening = "[\n"
    separator = ",\n"

    def encode(self, record: Record) -> str:
        return json_text(record)

    def closing(self) -> str:
        return "\n]\n" if self.count else "[]\n"


def csv_text(rows: list[dict]) -> str:
    """Rows of ``CSV_FIELDS`` as CSV text. Every text field is quoted, numbers are not: a
    path holding ``\\r`` stays one field (unquoted, the csv module would leave it bare)."""
    buffer = io.StringIO()
    csv.DictWriter(buffer, CSV_FIELDS, lineterminator="\n",
                   quoting=csv.QUOTE_NONNUMERIC).writerows(rows)
    return buffer.getvalue()


CSV_HEADER = csv_text([{name: name for name in CSV_FIELDS}])


class CsvWriter(TextWriter):
    """One row per (image, rank) after a header; a failed image gets one row with its
    error."""

    opening = CSV_HEADER

    def encode(self, record: Record) -> str:
        if record.error is not None:
            return csv_text([{"path": record.path, "error": record.error}])
        return csv_text([{"path": record.path, "rank": p.rank, "index": p.index,
                          "wnid": p.wnid, "label": p.label, "score": p.score, "error": ""}
                         for p in record.predictions])


WRITERS = {"json": JsonArrayWriter, "jsonl": JsonLinesWriter, "csv": CsvWriter}


class StdoutStream:
    """A writer's stream on stdout, as bytes (a CSV keeps a name's own bytes); a full
    device is one ``OutputError``. A reader that closed the pipe raises
    ``BrokenPipeError``, which click turns into a quiet exit."""

    def __init__(self, binary: BinaryIO | None = None):
        self.binary = binary if binary is not None else sys.stdout.buffer

    def write(self, text: str) -> None:
        self._do(self.binary.write, text.encode(ENCODING, ERRORS))

    def flush(self) -> None:
        self._do(self.binary.flush)

    @staticmethod
    def _do(operation, *args) -> None:
        try:
            operation(*args)
        except BrokenPipeError:
            raise
        except OSError as exc:
            raise write_error("stdout", exc) from None


class Output:
    """Where one run's records go: ``writer``, and what an earlier run left there
    (``done``: path keys, see ``inputs.path_key``; ``failed``: its error records).

    Used as a context manager, for one run only: the writer is closed (a JSON array gets
    its ``]``) when the run ends, or is interrupted or fails after writing records; a run
    that is interrupted or fails before its first record writes nothing at all. Once
    closed, the output refuses another run.
    """

    # (device, inode) of every file the output writes: a folder walk never reads them.
    identities: frozenset[tuple[int, int]] = frozenset()

    def __init__(self, writer: RecordWriter, done: frozenset[str] | set[str] = frozenset(),
                 failed: int = 0):
        self.writer, self.done, self.failed = writer, done, failed
        self.held = writer.count  # the records an earlier run left
        self.closed = False

    def __enter__(self) -> Output:
        if self.closed:
            raise ValueError("this output was closed at the end of the run that used it; "
                             "open the file again for another run")
        return self

    def __exit__(self, kind, exc, traceback) -> None:
        wrote = self.writer.count > self.held
        ended = kind is None or (wrote and issubclass(kind, KeyboardInterrupt))
        closed = False
        try:
            if ended or wrote:
                self.writer.close()
            closed = True
        except Exception:
            if ended:
                raise  # else the run's own error is the one to report
        finally:
            self.closed = True
            self.release(completed=ended and closed)

    def release(self, completed: bool) -> None:
        """Let go of the destination; ``completed``: the run ended, or stopped cleanly."""
