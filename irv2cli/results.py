"""Results files: pick the format, refuse to clobber, and resume after a crash.

Resuming re-reads the file, keeps every complete record (a line torn by a crash,
or a CSV image cut short, is dropped so that image is classified again), rewrites
them atomically and appends the rest of the run to the same file.
"""

from __future__ import annotations

import csv
import io
import json
import os
import tempfile
from collections.abc import Iterator
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


def _without_torn_tail(text: str) -> str:
    """The text up to its last newline: a last line without one was torn by a crash."""
    return text[: text.rfind("\n") + 1]


def _json_records(text: str, path: Path, array: bool) -> Iterator[Record]:
    for number, line in enumerate(_without_torn_tail(text).splitlines(), start=1):
        if array and line.strip() in ("[", "]", "[]"):
            continue
        try:
            yield _record(json.loads(line.rstrip().removesuffix(",") if array else line))
        except (ValueError, KeyError, TypeError):
            raise OutputError(
                f"{path}: line {number} is not a result record; move the file away or fix "
                "it before resuming."
            ) from None


def _csv_records(text: str, path: Path, top_k: int) -> Iterator[Record]:
    rows = csv.DictReader(io.StringIO(_without_torn_tail(text), newline=""))
    if rows.fieldnames and tuple(rows.fieldnames) != CSV_FIELDS:
        raise OutputError(f"{path}: not a results CSV (header {rows.fieldnames}).")
    groups = [(name, list(group)) for name, group in groupby(rows, key=lambda r: r["path"])]
    for position, (name, group) in enumerate(groups):
        if group[0]["error"]:
            yield Record(name, error=group[0]["error"])
            continue
        predictions = [Prediction(int(r["rank"]), int(r["index"]), r["wnid"], r["label"],
                                  float(r["score"])) for r in group]
        if position == len(groups) - 1 and len(predictions) < top_k:
            return  # cut short by a crash: classify it again
        yield Record(name, predictions)


def read_records(path: Path, fmt: str, top_k: int) -> Iterator[Record]:
    """The complete records of a results file written by an earlier run."""
    text = path.read_text(encoding="utf-8")
    if fmt == "csv":
        return _csv_records(text, path, top_k)
    return _json_records(text, path, array=(fmt == "json"))


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
