"""Results files: pick the format, refuse to clobber, and resume after a crash.

Resuming re-reads the file, keeps every complete record (a line torn by a crash,
or a CSV image cut short, is dropped so that image is classified again), rewrites
them atomically and appends the rest of the run to the same file.
"""

from __future__ import annotations

import csv
import json
import os
import tempfile
from collections.abc import Iterable, Iterator
from itertools import groupby
from pathlib import Path
from typing import TextIO

from .classifier import Record
from .errors import OutputError
from .labels import Prediction
from .output import CSV_FIELDS, WRITERS, RecordWriter

EXTENSIONS = {".csv": "csv", ".jsonl": "jsonl", ".ndjson": "jsonl", ".json": "json"}


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


def _record(data: dict) -> Record:
    predictions = [Prediction(**p) for p in data.get("predictions") or []]
    return Record(data["path"], predictions, data.get("error"))


def _complete_lines(lines: Iterable[str]) -> Iterator[str]:
    """The lines that end in a newline: a last line without one was torn by a crash."""
    return (line for line in lines if line.endswith("\n"))


def _json_records(lines: Iterable[str], path: Path, array: bool) -> Iterator[Record]:
    for number, line in enumerate(_complete_lines(lines), start=1):
        line = line.rstrip("\r\n")
        if array and line.strip() in ("[", "]", "[]"):
            continue
        try:
            yield _record(json.loads(line.rstrip().removesuffix(",") if array else line))
        except (ValueError, KeyError, TypeError):
            raise OutputError(
                f"{path}: line {number} is not a result record; move the file away or fix "
                "it before resuming."
            ) from None


def _csv_records(lines: Iterable[str], path: Path, top_k: int) -> Iterator[Record]:
    rows = csv.DictReader(_complete_lines(lines))
    if rows.fieldnames and tuple(rows.fieldnames) != CSV_FIELDS:
        raise OutputError(f"{path}: not a results CSV (header {rows.fieldnames}).")
    last = None
    for name, group in groupby(rows, key=lambda r: r["path"]):
        if last is not None:
            yield last
        last = _csv_record(name, list(group))
    if last is not None and (last.error or len(last.predictions) >= top_k):
        yield last  # else the crash cut its rows short: classify it again


def _csv_record(path: str, rows: list[dict]) -> Record:
    if rows[0]["error"]:
        return Record(path, error=rows[0]["error"])
    return Record(path, [Prediction(int(r["rank"]), int(r["index"]), r["wnid"], r["label"],
                                    float(r["score"])) for r in rows])


def read_records(path: Path, fmt: str, top_k: int) -> Iterator[Record]:
    """The complete records of a results file written by an earlier run, streamed."""
    with open(path, encoding="utf-8", newline="") as lines:
        if fmt == "csv":
            yield from _csv_records(lines, path, top_k)
        else:
            yield from _json_records(lines, path, array=(fmt == "json"))


def _open_text(path: Path, fmt: str) -> TextIO:
    return open(path, "w", encoding="utf-8", newline="" if fmt == "csv" else None)


def open_results(path: Path, fmt: str, resume: bool, overwrite: bool, top_k: int
                 ) -> tuple[RecordWriter, set[str]]:
    """A writer on ``path`` and the paths it already holds (empty unless resuming)."""
    if path.exists() and not (resume or overwrite):
        raise OutputError(
            f"{path} already exists: pass --resume to continue that run, or --overwrite to "
            "replace it."
        )
    if not (resume and path.exists()):
        try:
            return WRITERS[fmt](_open_text(path, fmt)), set()
        except OSError as exc:
            raise OutputError(f"{path}: cannot write results ({exc.strerror}).") from None
    handle, temp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    os.close(handle)
    temp = Path(temp)
    writer = WRITERS[fmt](_open_text(temp, fmt))
    done: set[str] = set()
    try:
        for record in read_records(path, fmt, top_k):
            writer.write(record)
            done.add(record.path)
    except BaseException:
        writer.stream.close()
        temp.unlink()
        raise
    os.replace(temp, path)
    return writer, done
