"""A Ray Data sink writing a run's records as Parquet shards (see ``results.shards``)."""

from __future__ import annotations

from ray.data.block import BlockAccessor
from ray.data.datasource import Datasink

from ..results.shards import ShardFolder, shard_table
from .rows import column_records


class ShardSink(Datasink):
    """Each write task puts its rows (at least ``rows`` of them, bar the last) in one
    shard of ``folder``, named for ``run`` and the task: a retried task rewrites the
    same shard. ``counts`` says (classified, failed) once the write completes. The
    folder exists already: the run made it when it took hold of it."""

    def __init__(self, folder: ShardFolder, run: str, outputs: tuple[str, ...], rows: int):
        self.folder, self.run, self.outputs, self.rows = folder, run, outputs, rows
        self.counts = (0, 0)

    def write(self, blocks, ctx) -> tuple[int, int]:
        accessors = [BlockAccessor.for_block(block) for block in blocks]
        # a block without rows (every input already done) may have no columns at all
        records = [record for block in accessors if block.num_rows()
                   for record in column_records(block.to_batch_format("numpy"))]
        if not records:
            return 0, 0
        self.folder.write(shard_table(records, self.outputs), self.run, ctx.task_idx)
        failed = sum(record.error is not None for record in records)
        return len(records) - failed, failed

    def on_write_complete(self, write_result) -> None:
        returns = write_result.write_returns
        self.counts = (sum(r[0] for r in returns), sum(r[1] for r in returns))

    @property
    def min_rows_per_write(self) -> int:
        return self.rows
