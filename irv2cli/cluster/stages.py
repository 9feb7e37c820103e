"""The Ray Data stages of a run: list the inputs, decode them, run the network.

Each stage is a plain callable that Ray Data runs in its worker processes; none of them
returns to the driver. Local paths are read in the folder the run was started in (the
same path on every node: a shared filesystem); URIs are read by whichever node decodes
them.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from dataclasses import dataclass
from itertools import islice

import numpy as np

from ..errors import Irv2Error
from ..inputs.decoding import DecodedInOrder, DecodeLimits, DecodePool
from ..inputs.images import Preprocessing, to_input
from ..inputs.paths import InputSelection, iter_image_paths, path_key
from ..inputs.uris import is_uri
from ..pipeline.batches import Batch
from ..pipeline.classifier import Classifier
from ..pipeline.job import RunOptions
from ..results.heads import Head
from ..results.shards import SHARD
from ..spec import SPEC
from .rows import Columns, name_bytes, name_text, record_columns, texts, warnings_of, warnings_text

LISTED_PER_BLOCK = 1024  # paths the listing hands on at a time


def enter(folder: str) -> None:
    """Work in ``folder`` (the driver's working folder), so relative inputs mean what they
    meant there; where this node lacks it, relative inputs are missing files here."""
    with contextlib.suppress(OSError):
        os.chdir(folder)


@dataclass(frozen=True)
class Listing:
    """One input's listing, run as a Ray Data read task: its image paths in sorted order,
    without those already done, as blocks of ``{"path": bytes}`` rows."""

    input: str
    selection: InputSelection
    folder: str
    done: object  # an ObjectRef to the set of path keys already in the output
    shards: str | None = None  # the output's folder of shards, never listed

    def __call__(self) -> Iterator:
        import pyarrow as pa
        import ray

        enter(self.folder)
        done = ray.get(self.done)
        paths = (name_bytes(p) for p in iter_image_paths([self.input], self.selection)
                 if path_key(p) not in done and not self._is_shard(p))
        while chunk := list(islice(paths, LISTED_PER_BLOCK)):
            yield pa.table({"path": pa.array(chunk, pa.binary())})

    def _is_shard(self, path: str) -> bool:
        """Whether ``path`` is a shard of the output (a run into its input folder)."""
        if self.shards is None or not SHARD.fullmatch(os.path.basename(path)):
            return False
        where = (lambda p: p.rstrip("/")) if is_uri(path) else os.path.abspath
        return where(os.path.dirname(path)) == where(self.shards.rstrip("/") or "/")


class Decode:
    """Decodes each row's file in this actor's isolated worker processes (see
    ``inputs.decoding``): a file that crashes, hangs or exhausts its decoder becomes that
    row's ``error``, never the stage's. The workers end with the actor (they die with
    their parent), so the pool is never closed explicitly."""

    def __init__(self, preprocessing: Preprocessing, limits: DecodeLimits, workers: int,
                 folder: str):
        enter(folder)
        self.preprocessing = preprocessing
        self.pool = DecodePool(workers, limits)

    def __call__(self, rows: Columns) -> Columns:
        paths = [name_text(raw) for raw in rows["path"]]
        size = SPEC.input_size
        pixels = np.zeros((len(paths), size, size, 3), dtype=np.uint8)
        errors: list[str] = []
        warnings: list[str] = []
        with DecodedInOrder(paths, self._submit, len(paths)) as decoded:
            for row, (_, outcome) in enumerate(decoded):
                if isinstance(outcome, str):
                    errors.append(outcome)
                    warnings.append("")
                else:
                    pixels[row] = outcome.pixels
                    errors.append("")
                    warnings.append(warnings_text(outcome.warnings))
        return {"path": rows["path"], "pixels": pixels, "error": texts(errors),
                "warnings": texts(warnings)}

    def _submit(self, path: str):
        return self.pool.submit(path, self.preprocessing)


class Infer:
    """Runs the network on decoded rows, in an actor that loads the engine once: the
    cached artifact of the weights on this node (built by the first actor that needs
    it; the others wait for it), or the official weights, fetched into this node's cache
    when it lacks them. In ``precision`` int8, the node's own int8 artifact, which
    ``irv2 quantize`` must have built there. ``options`` are the run's; ``head``, its head
    (loaded by the driver), is applied to the features."""

    def __init__(self, options: RunOptions, head: Head | None = None):
        from ..engines.base import check_outputs, load_engine
        from ..store.weights import ensure_weights

        self.failure: Irv2Error | None = None
        try:
            engine = load_engine(options.weights or ensure_weights(), options.backend,
                                 precision=options.precision)
            if head is not None:
                from ..engines.head import HeadEngine

                engine = HeadEngine(engine, head)
            check_outputs(engine.outputs, options.outputs, options.weights)
        except Irv2Error as exc:
            # Raised here, it would kill the actor, and reach the driver as Ray's text
            # of it; raised by a batch, it reaches the driver as itself.
            self.failure = exc
            return
        self.classifier = Classifier(engine, options.top_k, options.outputs)

    def __call__(self, rows: Columns) -> Columns:
        if self.failure is not None:
            raise self.failure
        errors = rows["error"]
        decoded = tuple(i for i, error in enumerate(errors) if not error)
        batch = Batch(tuple(name_text(raw) for raw in rows["path"]),
                      to_input(rows["pixels"][list(decoded)]), decoded,
                      {i: str(error) for i, error in enumerate(errors) if error},
                      {i: warnings_of(rows["warnings"][i]) for i in decoded})
        classifier = self.classifier
        return record_columns(classifier.classify_batch(batch), classifier.outputs,
                              classifier.top_k)
