"""Read back what an earlier run wrote: complete lines, the records on them, and where
the last complete one ends (a crash may have cut the one after it)."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

from ..errors import OutputError
from ..inputs.paths import path_key
from .records import Record
from .writers import ENCODING, ERRORS, shown

MAX_LINE = 1 << 24  # no record comes near 16 MiB: a longer line is not ours
JSON_START = b'{"path": '  # how every JSON record we write begins

Parse = Callable[[dict], Record]  # a decoded JSON object -> its record; raises on a foreign one


@dataclass
class Held:
    """What an output file holds: its records' path keys, how many of them are errors,
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


def not_records(path: Path, line: int) -> OutputError:
    return OutputError(f"{shown(path)}: line {line} is not a result record; move the "
                       "file away or fix it before resuming.")


class Lines:
    """A file's complete lines, with ``end`` (the offset after the last one returned) and
    ``number``; what follows the last newline is kept as ``tail``, cut by a crash."""

    def __init__(self, stream: BinaryIO, path: Path):
        self.stream, self.path = stream, path
        self.end = self.number = 0
        self.tail = b""
        self.done = False

    def __iter__(self) -> Lines:
        return self

    def __next__(self) -> bytes:
        if self.done:
            raise StopIteration
        line = self.stream.readline(MAX_LINE)
        if not line.endswith(b"\n"):
            if self.stream.read(1):  # not the end of the file: a line longer than any record
                raise not_records(self.path, self.number + 1)
            self.tail, self.done = line, True
            raise StopIteration
        self.number += 1
        self.end += len(line)
        return line

    def check_tail(self, start: bytes) -> None:
        """A torn tail is dropped only if it is the start of what we write (``start``)."""
        if self.tail and not (self.tail.startswith(start) or start.startswith(self.tail)):
            raise not_records(self.path, self.number + 1)


def json_record(text: bytes, path: Path, line: int, parse: Parse) -> Record:
    """The record on one line of JSON; a line that is not one of ours is refused (also
    one nested too deep to parse)."""
    try:
        data = json.loads(text.decode(ENCODING, ERRORS))
        if not isinstance(data["path"], str):
            raise TypeError("path")
        return parse(data)
    except (ValueError, KeyError, TypeError, AttributeError, RecursionError):
        raise not_records(path, line) from None


def json_lines(lines: Lines, parse: Parse) -> Iterator[tuple[Record, int]]:
    """(record, offset after it) for each complete line of a JSON Lines file."""
    for line in lines:
        yield json_record(line, lines.path, lines.number, parse), lines.end
    lines.check_tail(JSON_START)


def held_by(records: Iterator[tuple[Record, int]],
            check: Callable[[Record], None] = lambda record: None) -> Held:
    """What ``records`` (record, offset after it) add up to; ``check`` may refuse one."""
    held = Held()
    for record, end in records:
        check(record)
        held.add(record, end)
    return held
