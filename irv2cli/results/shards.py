"""Folders of Parquet shards: the output of runs too large for one file, on a local
disk or in object storage (any URI pyarrow's filesystems open).

Each shard is a complete Parquet file named ``part-RUN-TASK.parquet``; it appears whole
or not at all (staged and renamed on a local disk; object stores publish an upload only
when it completes), so a reader never meets half a shard and a killed run leaves only
complete ones. Feature shards have the schema of ``irv2 embed``'s Parquet file;
prediction shards hold the path, the top-k as a list of structs, and the error, with
``path_bytes`` for names that are not UTF-8.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import re
import uuid
from collections.abc import Iterator
from dataclasses import asdict, dataclass

import pyarrow as pa
import pyarrow.parquet as pq
from pyarrow import fs as pafs

from ..errors import Hint, OutputError
from ..inputs.uris import filesystem, is_uri, local_path
from ..spec import FEATURES
from ..store.atomic import atomic_file
from .feature_parquet import feature_row, feature_table, name_columns, stored_name
from .records import Record
from .writers import printable, shown

SHARD = re.compile(r"part-[0-9a-f]{12}-\d{6}\.parquet")
PREDICTION = pa.struct([("rank", pa.int32()), ("index", pa.int32()), ("wnid", pa.string()),
                        ("label", pa.string()), ("score", pa.float64())])
PREDICTION_SCHEMA = pa.schema([("path", pa.string()), ("predictions", pa.list_(PREDICTION)),
                               ("error", pa.string()), ("path_bytes", pa.binary())])


def shard_table(records: list[Record], outputs: tuple[str, ...]) -> pa.Table:
    """``records`` as one shard's table."""
    if FEATURES in outputs:
        return feature_table([feature_row(record) for record in records])
    return pa.Table.from_pylist([_prediction_row(record) for record in records],
                                schema=PREDICTION_SCHEMA)


def _prediction_row(record: Record) -> dict:
    text, raw = name_columns(record.path)
    failed = record.error is not None
    return {"path": text, "path_bytes": raw,
            "error": printable(record.error) if failed else None,
            "predictions": None if failed else [asdict(p) for p in record.predictions]}


@dataclass(frozen=True)
class ShardFolder:
    """A folder of shards at ``uri`` (a local path or a filesystem URI)."""

    uri: str

    @property
    def located(self) -> tuple[pafs.FileSystem, str]:
        """The filesystem and the folder's path in it."""
        local = local_path(self.uri) if is_uri(self.uri) else os.path.abspath(self.uri)
        if local is None:
            return filesystem(self.uri)
        return pafs.LocalFileSystem(), local

    def shards(self) -> list[str]:
        """The complete shards already in the folder, by name; none if it does not exist."""
        fs, folder = self.located
        try:
            infos = fs.get_file_info(pafs.FileSelector(folder, allow_not_found=True))
        except (OSError, pa.ArrowException) as exc:
            raise OutputError(f"{shown(self.uri)}: cannot list the output folder ({exc})."
                              ) from None
        return sorted(info.path for info in infos
                      if info.type == pafs.FileType.File and SHARD.fullmatch(info.base_name))

    def records(self) -> Iterator[Record]:
        """The records of every shard already there: path and error."""
        fs, _ = self.located
        for shard in self.shards():
            try:
                table = pq.read_table(shard, columns=["path", "path_bytes", "error"],
                                      filesystem=fs)
            except (OSError, pa.ArrowException) as exc:
                raise OutputError(f"{shown(shard)}: not a shard written by irv2 ({exc}); "
                                  "move it away before resuming.", hint=Hint.RESUME) from None
            for text, raw, error in zip(table["path"].to_pylist(),
                                        table["path_bytes"].to_pylist(),
                                        table["error"].to_pylist(), strict=True):
                yield Record(stored_name(text, raw), error=error)

    def remove_shards(self) -> None:
        """Delete the shards an earlier run wrote (for an overwrite), nothing else."""
        fs, _ = self.located
        for shard in self.shards():
            fs.delete_file(shard)

    def write(self, table: pa.Table, run: str, task: int) -> None:
        """Put ``table`` in place as shard ``task`` of ``run``: whole or not at all."""
        fs, folder = self.located
        name = f"{folder.rstrip('/')}/part-{run}-{task:06d}.parquet"
        if fs.type_name != "local":  # an upload is published when it completes
            pq.write_table(table, name, filesystem=fs)
            return
        with atomic_file(name) as stream:
            pq.write_table(table, stream)

    @contextlib.contextmanager
    def held(self) -> Iterator[None]:
        """The folder (made if missing) held by this run for the block: a second run into
        a local folder is refused at once, where it would have written every image
        again beside this run's shards. (Object stores have no locks: there, one run at a
        time is up to the user.)"""
        try:
            self.make()
        except (OSError, pa.ArrowException) as exc:
            raise OutputError(f"{shown(self.uri)}: cannot make the output folder ({exc})."
                              ) from None
        fs, folder = self.located
        if fs.type_name != "local":
            yield
            return
        fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                raise OutputError(f"{shown(self.uri)} is being written by another irv2 run: "
                                  "wait for it to finish", hint=Hint.OTHER_OUTPUT) from None
            yield
        finally:
            os.close(fd)

    def make(self) -> None:
        """Create the folder (and its parents) if missing."""
        fs, folder = self.located
        fs.create_dir(folder, recursive=True)


def new_run() -> str:
    """A run's tag in its shards' names: 12 hex digits."""
    return uuid.uuid4().hex[:12]


__all__ = ["PREDICTION_SCHEMA", "ShardFolder", "new_run", "shard_table"]
