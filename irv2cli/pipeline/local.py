"""This machine as a run's runner: isolated decoding workers feed one engine.

The first batch is decoded while the engine is still loading; the engine may be given
loaded, still loading (a ``Future`` or ``preload.Deferred``), or left to the runner,
which loads the one the job's options name.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from concurrent.futures import Future

from ..engines.base import Engine, check_outputs
from ..inputs.decoding import DecodePool, default_workers
from ..results.records import Record
from .batches import decoded_batches
from .classifier import Classifier
from .job import Job, Notify, RunOptions
from .preload import Deferred

EngineSource = Engine | Future | Deferred


class LocalRunner:
    """Runs jobs on this machine. ``engine``: a loaded engine, one still loading, or
    ``None`` (the engine for the job's weights, backend and precision, loaded once the
    first batch is decoded). ``decoders``: a started pool, which the caller closes, or
    ``None`` (a pool of the job's own)."""

    def __init__(self, engine: EngineSource | None = None, decoders: DecodePool | None = None):
        self.engine, self.decoders = engine, decoders

    @property
    def loaded(self) -> Engine | None:
        """The engine, if it has loaded (without waiting for one still loading)."""
        engine = self.engine
        if isinstance(engine, Future):
            return engine.result() if engine.done() and not engine.exception() else None
        if isinstance(engine, Deferred):
            return engine.loaded
        return engine

    def total(self, job: Job) -> int:
        return sum(1 for _ in job.todo())

    def records(self, job: Job) -> Iterator[Record]:
        todo = job.todo()
        first = next(todo, None)
        if first is None:
            return
        options = job.options
        owned = None
        decoders = self.decoders
        if decoders is None:
            decoders = owned = DecodePool(options.workers or default_workers(),
                                          options.decode_limits)
        try:
            batches = decoded_batches(itertools.chain([first], todo), decoders,
                                      options.preprocessing, options.batch_size)
            decoded = next(batches)
            engine = self._engine(options, job.notify)
            if job.head is not None:
                from ..engines.head import HeadEngine

                engine = HeadEngine(engine, job.head)
            check_outputs(engine.outputs, options.outputs, options.weights)
            classifier = Classifier(engine, options.top_k, options.outputs,
                                    batch_size=options.batch_size, keep_pixels=options.pixels)
            job.on_ready()
            yield from classifier.classify_batches(itertools.chain([decoded], batches))
        finally:
            if owned is not None:
                owned.close()

    def _engine(self, options: RunOptions, notify: Notify) -> Engine:
        """The engine to run: the one given (waited for if still loading), else loaded. A
        Ctrl-C while a native module initialises comes out of the import as an
        ImportError: it is the interrupt it was."""
        try:
            return self._resolve(options, notify)
        except ImportError as exc:
            interrupt = exc.__cause__ or exc.__context__
            if isinstance(interrupt, KeyboardInterrupt):
                raise interrupt from None
            raise

    def _resolve(self, options: RunOptions, notify: Notify) -> Engine:
        if isinstance(self.engine, (Future, Deferred)):
            return self.engine.result()
        if self.engine is None:
            from ..engines.base import load_engine
            from ..store.weights import ensure_weights

            weights = options.weights or ensure_weights(notify=notify)
            self.engine = load_engine(weights, options.backend, notify, options.precision)
        return self.engine
