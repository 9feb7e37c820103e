"""Records cross Ray Data stages as columns and come back the same, through Ray's own
block conversion (no cluster needed)."""

from __future__ import annotations

import numpy as np
import pytest
from ray.data import block

from irv2cli.cluster.rows import column_records, record_columns
from irv2cli.results.labels import decode_top_k
from irv2cli.results.records import Record
from irv2cli.spec import FEATURES, PROBABILITIES


def through_a_block(columns: dict) -> dict:
    """``columns`` as Ray Data stores a batch between stages, and hands it on."""
    accessor = block.BlockAccessor.for_block(block.BlockAccessor.batch_to_block(columns))
    return accessor.to_batch_format("numpy")


def scores(seed: int) -> np.ndarray:
    return np.random.default_rng(seed).dirichlet(np.ones(1000)).astype(np.float32)


@pytest.mark.parametrize("failed", [False, True], ids=["all decoded", "one failed"])
def test_records_survive_the_trip_between_stages(failed):
    records = [Record("photos/a.jpg", decode_top_k(scores(0), 5), warnings=("short read",),
                      features=np.arange(1536, dtype=np.float32)),
               Record("photos/caf\udce9.jpg", decode_top_k(scores(1), 5),
                      features=np.ones(1536, np.float32))]
    if failed:
        records.append(Record("photos/notes.jpg", error="photos/notes.jpg: not an image."))
    outputs = (PROBABILITIES, FEATURES)

    back = column_records(through_a_block(record_columns(records, outputs, 5)))

    assert back == records  # path, predictions (exact scores), error, warnings
    for got, sent in zip(back, records, strict=True):
        if sent.features is None:
            assert got.features is None
        else:
            np.testing.assert_array_equal(got.features, sent.features)
