"""Results files: pick the format, read back what an earlier run wrote, resume.

The file is held and written in place as ``locked`` describes. Resuming first streams
the whole file as bytes (a crash may have cut a character in two), checks every record
and finds where the last complete one ends; the first write truncates the file there
and appends.
"""

from __future__ import annotations

import csv
from collections.abc import Callable, Iterator
from itertools import groupby
from pathlib import Path
from typing import BinaryIO

from ..errors import Hint, OutputError
from .heads import TAG_PREFIX
from .labels import Prediction
from .locked import LinesOutput, open_append
from .records import Record
from .scanning import JSON_START, Held, Lines, held_by, json_lines, json_record, not_records
from .writers import CSV_FIELDS, CSV_HEADER, ENCODING, ERRORS, WRITERS, shown

EXTENSIONS = {".csv": "csv", ".jsonl": "jsonl", ".ndjson": "jsonl", ".json": "json"}


def output_format(path: Path, fmt: str | None = None) -> str:
    """``fmt`` if given, else the format the file's extension names."""
    if fmt:
        return fmt
    try:
        return EXTENSIONS[path.suffix.lower()]
    except KeyError:
        raise OutputError(f"{shown(path)}: cannot tell the format from the extension "
                          "(.csv, .jsonl, .json)", hint=Hint.NAME_FORMAT) from None


def _predictions(data: dict) -> Record:
    """A predict record: path, predictions, error."""
    return Record(data["path"], [Prediction(**p) for p in data["predictions"] or []],
                  data["error"])


def _jsonl_records(lines: Lines, path: Path, top_k: int) -> Iterator[tuple[Record, int]]:
    return json_lines(lines, _predictions)


def _json_array_records(lines: Lines, path: Path, top_k: int
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
        raise not_records(path, 1)
    for line in lines:
        body = line.rstrip()
        if body == b"]":
            _check_blank(lines, path)
            return
        body = body.removesuffix(b",")
        end = lines.end - len(line) + len(body)
        yield json_record(body, path, lines.number, _predictions), end
    tail = lines.tail.rstrip().removesuffix(b",")
    if tail in (b"", b"]"):
        return
    try:  # written whole, but not yet followed by the next ",\n"
        yield json_record(tail, path, lines.number + 1, _predictions), lines.end + len(tail)
    except OutputError:
        lines.check_tail(JSON_START)


def _check_blank(lines: Lines, path: Path) -> None:
    """Nothing but blank lines may follow the closing ``]``."""
    for line in lines:
        if line.strip():
            raise not_records(path, lines.number)
    if lines.tail.strip():
        raise not_records(path, lines.number + 1)


def _csv_rows(lines: Lines) -> Iterator[tuple[list[str], int, int]]:
    """(row, offset after it, line number) for each complete row."""
    for row in csv.reader(line.decode(ENCODING, ERRORS) for line in lines):
        if lines.done:
            return  # the file ended inside a quoted field: a row the crash cut
        yield row, lines.end, lines.number


def _csv_records(lines: Lines, path: Path, top_k: int) -> Iterator[tuple[Record, int]]:
    """Records of a results CSV: consecutive rows of one path. The last image's rows end
    the file, so fewer than ``top_k`` of them (and no error) is a record a crash cut;
    after the header, whatever follows the last newline is a row a crash cut."""
    first = next(lines, None)
    if first is None:
        lines.check_tail(CSV_HEADER.encode(ENCODING))
        return
    if next(csv.reader([first.decode(ENCODING, ERRORS)])) != list(CSV_FIELDS):
        raise OutputError(f"{shown(path)}: not a results CSV (its header is not "
                          f"{','.join(CSV_FIELDS)}); move it away", hint=Hint.OTHER_OUTPUT)
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
        raise not_records(path, line) from None


RECORDS: dict[str, Callable[[Lines, Path, int], Iterator[tuple[Record, int]]]] = {
    "jsonl": _jsonl_records, "json": _json_array_records, "csv": _csv_records}


def _check_top_k(record: Record, path: Path, top_k: int) -> None:
    k = len(record.predictions)
    if k and k != top_k:
        raise OutputError(f"{shown(path)} holds top-{k} results and this run asks for "
                          f"top-{top_k}", hint=Hint.SAME_TOP_K)


def _classes_of(wnid: str) -> str:
    return (f"the head {wnid.removeprefix(TAG_PREFIX)}" if wnid.startswith(TAG_PREFIX)
            else "ImageNet's classes")


def _check_classes(record: Record, path: Path, tag: str | None) -> None:
    """A record's predictions must be of the run's head (its ``tag``), or of ImageNet's
    classes when ``tag`` is ``None``."""
    if not record.predictions:
        return
    wnid = record.predictions[0].wnid
    if (wnid != tag) if tag is not None else wnid.startswith(TAG_PREFIX):
        wanted = "ImageNet's classes" if tag is None else _classes_of(tag)
        raise OutputError(f"{shown(path)} holds results of {_classes_of(wnid)} and this run "
                          f"classifies with {wanted}", hint=Hint.SAME_HEAD)


def scan_results(stream: BinaryIO, path: Path, fmt: str, top_k: int,
                 tag: str | None = None) -> Held:
    """Check every record an earlier run left in ``stream`` and find where the last
    complete one ends; refuse a file that is not results, or holds another ``-k``, or the
    classes of another head than the one whose ``tag`` is given (``None``: no head)."""
    def check(record: Record) -> None:
        _check_classes(record, path, tag)
        _check_top_k(record, path, top_k)

    return held_by(RECORDS[fmt](Lines(stream, path), path, top_k), check)


def open_results(path: Path, fmt: str, *, resume: bool, overwrite: bool, top_k: int,
                 tag: str | None = None) -> LinesOutput:
    """``path`` opened and locked for this run, holding what an earlier run wrote when
    resuming. An empty file counts as missing; any other existing file needs ``resume``
    or ``overwrite``; what is not a regular file is refused before anything is read.
    ``tag``: the run's head's (see ``scan_results``)."""
    file, held = open_append(path, resume=resume, overwrite=overwrite,
                             scan=lambda stream: scan_results(stream, path, fmt, top_k, tag))
    return LinesOutput(file, WRITERS[fmt], held)
