"""The run API: inputs -> decoded batches -> engine -> records, written to a sink.

Every front end (``irv2 predict``, ``irv2 embed``, a Python caller) runs through
``run``; it knows nothing of flags, consoles or exit statuses.

>>> from irv2cli import RunOptions, run
>>> summary = run(["photos/"], "labels.csv", RunOptions(resume=True))
>>> summary.classified, summary.failed, summary.skipped
"""

from __future__ import annotations

import contextlib
import itertools
import os
import time
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol, runtime_checkable

from ..engines.base import Engine, check_outputs
from ..inputs.decoding import DecodeLimits, DecodePool, default_workers
from ..inputs.images import Preprocessing
from ..inputs.paths import InputSelection, iter_image_paths, path_key
from ..results.records import Record
from ..results.writers import Output
from ..spec import FEATURES, PROBABILITIES
from .batches import decoded_batches
from .classifier import Classifier
from .preload import Deferred

Notify = Callable[[str], None]


@dataclass(frozen=True)
class RunOptions:
    """What a run reads, how it decodes and infers, and what it asks the network for.

    ``outputs`` names what each record carries: ``probabilities`` (the top-k
    predictions) and/or ``features`` (the 1536-d average-pooled vector). ``pixels``
    makes each decoded image's record carry its input pixels (299x299x3 uint8, e.g.
    for a report's thumbnails; no file writes them). ``resume``, ``overwrite`` and
    ``fmt`` apply when the sink is given as a path.
    """

    weights: Path | None = None  # default: the official file, fetched if missing
    backend: str = "auto"
    precision: str = "fp32"  # or "int8": the artifact built by pipeline.quantize
    top_k: int = 5
    outputs: tuple[str, ...] = (PROBABILITIES,)
    batch_size: int = 8
    workers: int | None = None  # decoding processes; default one per core (at least 2)
    preprocessing: Preprocessing = field(default_factory=Preprocessing)
    decode_limits: DecodeLimits = field(default_factory=DecodeLimits)
    recursive: bool = True
    globs: tuple[str, ...] = ()
    include_hidden: bool = False
    fmt: str | None = None  # default: from the sink path's extension
    resume: bool = False
    overwrite: bool = False
    pixels: bool = False


@dataclass(frozen=True)
class RunSummary:
    """What a run did: records written this run (``classified`` without error, ``failed``
    with one), and what the output already held (``skipped`` inputs, ``failed_before``
    of them errors)."""

    classified: int
    failed: int
    skipped: int
    failed_before: int
    elapsed: float
    output: Path | str | None  # a file, or a folder of shards (a local path or a URI)

    @property
    def any_failed(self) -> bool:
        """Whether the output holds an error record, from this run or an earlier one."""
        return bool(self.failed or self.failed_before)


@dataclass(frozen=True)
class RunProgress:
    """Where a run stands after each record: ``total`` is ``None`` until counted."""

    done: int
    failed: int
    total: int | None
    elapsed: float


class RunInterrupted(KeyboardInterrupt):
    """The run was interrupted (Ctrl-C, or a signal the caller turns into one); the sink
    was closed cleanly first. ``summary`` says what was written; the original
    interrupt is the ``__cause__``."""

    def __init__(self, summary: RunSummary):
        super().__init__()
        self.summary = summary


@runtime_checkable
class RecordSource(Protocol):
    """An engine that makes a run's records itself, from the inputs on (a cluster, say),
    rather than from batches this process decodes: the records of every input that
    ``selection`` takes and whose ``path_key`` is not in ``done``, in any order."""

    def records(self, inputs: list[str], selection: InputSelection, done: set[str],
                options: RunOptions) -> Iterator[Record]: ...


EngineSource = Engine | Future | Deferred | RecordSource


def open_sink(path: str | os.PathLike, options: RunOptions) -> Output:
    """The output file at ``path``, in the format its extension (or ``options.fmt``)
    names: results (csv/jsonl/json) for probabilities, feature files when the run asks
    for features."""
    path = Path(path)
    if FEATURES in options.outputs:
        from ..results.features import feature_format, open_features

        return open_features(path, feature_format(path, options.fmt), resume=options.resume,
                             overwrite=options.overwrite)
    from ..results.files import open_results, output_format

    return open_results(path, output_format(path, options.fmt), resume=options.resume,
                        overwrite=options.overwrite, top_k=options.top_k)


def run(inputs: Iterable[str | os.PathLike] | str | os.PathLike,
        sink: Output | str | os.PathLike | None = None,
        options: RunOptions = RunOptions(), *, engine: EngineSource | None = None,
        decoders: DecodePool | None = None, notify: Notify = lambda message: None,
        on_record: Callable[[Record], None] | None = None,
        on_progress: Callable[[RunProgress], None] | None = None,
        exclude: Iterable[tuple[int, int]] = ()) -> RunSummary:
    """Process ``inputs`` (files and folders, which are walked in sorted order; or one
    path) into ``sink`` (an ``Output``, a path opened with ``open_sink``, or ``None``:
    records go only to ``on_record``) and say what was done.

    ``engine`` is a loaded engine, one still loading (a ``Future`` or ``Deferred``), a
    ``RecordSource`` such as ``cluster.RayEngine`` (which decodes and infers itself), or
    ``None``: the engine for ``options.weights``/``backend`` is loaded once the first
    batch is decoded. ``decoders`` is a pool to use (the caller closes it); default, one
    of the run's own. ``on_progress`` is called after each record (and makes the run
    count its inputs first, for ``total``). Inputs already in the sink are skipped, and so
    are the sink's own files and ``exclude`` (the (device, inode) of other files the
    caller writes meanwhile, such as a report). A file that cannot be read gets an error
    record and the run goes on. On Ctrl-C the sink is closed cleanly and
    ``RunInterrupted`` carries the summary.
    """
    if isinstance(inputs, (str, os.PathLike)):
        inputs = [inputs]  # one path, not its characters
    inputs = [os.fspath(p) for p in inputs]
    path = None if sink is None or isinstance(sink, Output) else Path(sink)
    where = path if path is not None else getattr(sink, "path", None)
    counts = _Counts()
    try:  # a Ctrl-C while an earlier run's file is being read is an interrupted run too
        output = open_sink(path, options) if path is not None else sink or Output(_NoWriter())
        with output as opened, contextlib.closing(_records(
                inputs, opened, options, engine, decoders, notify, on_progress, counts,
                frozenset(exclude))) as records:
            counts.skipped, counts.failed_before = len(opened.done), opened.failed
            for record in records:
                opened.writer.write(record)
                counts.add(record)
                if on_record is not None:
                    on_record(record)
                if on_progress is not None:
                    on_progress(counts.progress())
    except KeyboardInterrupt as exc:
        raise RunInterrupted(counts.summary(where)) from exc
    return counts.summary(where)


@dataclass
class _Counts:
    classified: int = 0
    failed: int = 0
    skipped: int = 0
    failed_before: int = 0
    total: int | None = None
    started: float = field(default_factory=time.perf_counter)

    def add(self, record: Record) -> None:
        self.classified += record.error is None
        self.failed += record.error is not None

    def progress(self) -> RunProgress:
        return RunProgress(self.classified + self.failed, self.failed, self.total,
                           time.perf_counter() - self.started)

    def summary(self, output: Path | None) -> RunSummary:
        return RunSummary(self.classified, self.failed, self.skipped, self.failed_before,
                          time.perf_counter() - self.started, output)


def _selection(output: Output, options: RunOptions, exclude: frozenset[tuple[int, int]]
               ) -> InputSelection:
    """The files of folders to take: never the output's files or ``exclude``."""
    return InputSelection(options.recursive, tuple(options.globs), options.include_hidden,
                          output.identities | exclude)


def _todo(inputs: list[str], output: Output, options: RunOptions,
          exclude: frozenset[tuple[int, int]]) -> Iterator[str]:
    """The input paths not yet in ``output``, never the output's files or ``exclude``."""
    selection = _selection(output, options, exclude)
    return (p for p in iter_image_paths(inputs, selection) if path_key(p) not in output.done)


def _records(inputs: list[str], output: Output, options: RunOptions,
             engine: EngineSource | None, decoders: DecodePool | None, notify: Notify,
             on_progress: Callable[[RunProgress], None] | None, counts: _Counts,
             exclude: frozenset[tuple[int, int]]) -> Iterator[Record]:
    """Records for every input not yet in ``output``: the first batch is decoded while
    the engine is still loading (unless the engine makes the records itself)."""
    if isinstance(engine, RecordSource):
        yield from engine.records(inputs, _selection(output, options, exclude), output.done,
                                  options)
        return
    todo = _todo(inputs, output, options, exclude)
    first = next(todo, None)
    if first is None:
        return
    if on_progress is not None:
        counts.total = sum(1 for _ in _todo(inputs, output, options, exclude))
    owned = None
    if decoders is None:
        decoders = owned = DecodePool(options.workers or default_workers(),
                                      options.decode_limits)
    try:
        batches = decoded_batches(itertools.chain([first], todo), decoders,
                                  options.preprocessing, options.batch_size)
        decoded = next(batches)
        loaded = _engine(engine, options, notify)
        check_outputs(loaded.outputs, options.outputs, options.weights)
        classifier = Classifier(loaded, options.top_k, options.outputs,
                                batch_size=options.batch_size, keep_pixels=options.pixels)
        counts.started = time.perf_counter()
        yield from classifier.classify_batches(itertools.chain([decoded], batches))
    finally:
        if owned is not None:
            owned.close()


def _engine(engine: EngineSource | None, options: RunOptions, notify: Notify) -> Engine:
    """The engine to run: the one given (waited for if still loading), else loaded. A
    Ctrl-C while a native module initialises comes out of the import as an ImportError:
    it is the interrupt it was."""
    try:
        return _resolve(engine, options, notify)
    except ImportError as exc:
        interrupt = exc.__cause__ or exc.__context__
        if isinstance(interrupt, KeyboardInterrupt):
            raise interrupt from None
        raise


def _resolve(engine: EngineSource | None, options: RunOptions, notify: Notify) -> Engine:
    if isinstance(engine, (Future, Deferred)):
        return engine.result()
    if engine is not None:
        return engine
    from ..engines.base import load_engine
    from ..store.weights import ensure_weights

    weights = options.weights or ensure_weights(notify=notify)
    return load_engine(weights, options.backend, notify, options.precision)


class _NoWriter:
    """The writer of a run without a sink: records go only to the callbacks."""

    count = 0

    def write(self, record: Record) -> None:
        pass

    def close(self) -> None:
        pass


__all__ = ["Deferred", "RecordSource", "RunInterrupted", "RunOptions", "RunProgress", "RunSummary",
           "open_sink", "run"]
