"""The run's inputs as a Ray Data datasource: one read task per input, each listing its
files lazily on a worker, so no list of every path is ever built on the driver."""

from __future__ import annotations

from ray.data.block import BlockMetadata
from ray.data.datasource import Datasource, ReadTask

from .stages import Listing


class PathSource(Datasource):
    """Rows of ``{"path": bytes}``: the image files of each listing, as it finds them."""

    def __init__(self, listings: list[Listing]):
        super().__init__()
        self.listings = listings

    def estimate_inmemory_data_size(self) -> None:
        return None  # unknown until listed

    def get_read_tasks(self, parallelism: int, per_task_row_limit: int | None = None,
                       data_context=None) -> list[ReadTask]:
        unknown = BlockMetadata(num_rows=None, size_bytes=None, input_files=None,
                                exec_stats=None)
        return [ReadTask(listing, unknown, per_task_row_limit=per_task_row_limit)
                for listing in self.listings]
