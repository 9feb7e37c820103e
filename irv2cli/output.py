"""Write records: JSON, JSON Lines and CSV to any text stream, each record flushed as it comes."""

from __future__ import annotations

import csv
import json
from abc import ABC, abstractmethod
from typing import TextIO

from .classifier import Record

FORMATS = ("json", "jsonl", "csv")
CSV_FIELDS = ("path", "rank", "index", "wnid", "label", "score", "error")


class RecordWriter(ABC):
    """Base writer: ``write`` each record, then ``close`` (which leaves the stream open)."""

    def __init__(self, stream: TextIO):
        self.stream = stream

    @abstractmethod
    def write(self, record: Record) -> None:
        """Write one record and flush it."""

    def close(self) -> None:
        self.stream.flush()


class JsonLinesWriter(RecordWriter):
    """One JSON object per line."""

    def write(self, record: Record) -> None:
        self.stream.write(json.dumps(record.to_dict(), ensure_ascii=False) + "\n")
        self.stream.flush()


class JsonArrayWriter(RecordWriter):
    """One JSON array, written element by element; ``[]`` when there are no records."""

    def __init__(self, stream: TextIO):
        super().__init__(stream)
        self.count = 0

    def write(self, record: Record) -> None:
        self.stream.write(("[\n" if self.count == 0 else ",\n")
                          + json.dumps(record.to_dict(), ensure_ascii=False))
        self.stream.flush()
        self.count += 1

    def close(self) -> None:
        self.stream.write("[]\n" if self.count == 0 else "\n]\n")
        super().close()


class CsvWriter(RecordWriter):
    """One row per (image, rank); a failed image gets one row with its error."""

    def __init__(self, stream: TextIO, header: bool = True):
        super().__init__(stream)
        self.rows = csv.DictWriter(stream, CSV_FIELDS, lineterminator="\n")
        if header:
            self.rows.writeheader()

    def write(self, record: Record) -> None:
        if record.error is not None:
            self.rows.writerow({"path": record.path, "error": record.error})
        for p in record.predictions:
            self.rows.writerow({"path": record.path, "rank": p.rank, "index": p.index,
                                "wnid": p.wnid, "label": p.label, "score": repr(p.score)})
        self.stream.flush()


WRITERS = {"json": JsonArrayWriter, "jsonl": JsonLinesWriter, "csv": CsvWriter}
