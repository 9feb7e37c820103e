"""The run API: inputs -> decoded batches -> engine -> records, written to a sink.

Every front end (``irv2 predict``, ``irv2 embed``, a Python caller) runs through
``run``; it knows nothing of flags, consoles or exit statuses.

>>> from irv2cli import RunOptions, run
>>> summary = run(["photos/"], "labels.csv", RunOptions(resume=True))
>>> summary.classified, summary.failed, summary.skipped
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING

from ..results.records import Record
from ..results.writers import Output
from ..spec import FEATURES
from .job import Job, Notify, Runner, RunOptions
from .local import LocalRunner

if TYPE_CHECKING:
    from ..results.heads import Head


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


def open_sink(path: str | os.PathLike, options: RunOptions, head: Head | None = None
              ) -> Output:
    """The output file at ``path``, in the format its extension (or ``options.fmt``)
    names: results (csv/jsonl/json) for probabilities, feature files when the run asks
    for features. Results resumed must be of ``head``'s classes (``None``: ImageNet's)."""
    path = Path(path)
    if FEATURES in options.outputs:
        from ..results.features import feature_format, open_features

        return open_features(path, feature_format(path, options.fmt), resume=options.resume,
                             overwrite=options.overwrite)
    from ..results.files import open_results, output_format

    return open_results(path, output_format(path, options.fmt), resume=options.resume,
                        overwrite=options.overwrite, top_k=options.top_k,
                        tag=None if head is None else head.tag)


def run(inputs: Iterable[str | os.PathLike] | str | os.PathLike,
        sink: Output | str | os.PathLike | None = None,
        options: RunOptions = RunOptions(), *, runner: Runner | None = None,
        notify: Notify = lambda message: None,
        on_record: Callable[[Record], None] | None = None,
        on_progress: Callable[[RunProgress], None] | None = None) -> RunSummary:
    """Process ``inputs`` (files and folders, which are walked in sorted order; or one
    path) into ``sink`` (an ``Output``, a path opened with ``open_sink``, or ``None``:
    records go only to ``on_record``) and say what was done.

    ``runner`` is where the records are made: a ``LocalRunner`` (the default: this
    machine, loading the engine that ``options`` name once the first batch is decoded)
    or a ``RayRunner`` (a Ray cluster). ``on_progress`` is called after each record (and
    makes the run count its inputs first, for ``total``, where the runner can). Inputs
    already in the sink are skipped, and so are the sink's own files and
    ``options.excluded``. A file that cannot be read gets an error record and the run
    goes on. On Ctrl-C the sink is closed cleanly and ``RunInterrupted`` carries the
    summary.
    """
    if isinstance(inputs, (str, os.PathLike)):
        inputs = [inputs]  # one path, not its characters
    inputs = [os.fspath(p) for p in inputs]
    head = None
    if options.head is not None:
        head, options = with_head(options, notify)
    runner = runner if runner is not None else LocalRunner()
    path = None if sink is None or isinstance(sink, Output) else Path(sink)
    where = path if path is not None else getattr(sink, "path", None)
    counts = _Counts()
    try:  # a Ctrl-C while an earlier run's file is being read is an interrupted run too
        output = (open_sink(path, options, head) if path is not None
                  else sink or Output(_NoWriter()))
        with output as opened:
            job = Job(inputs, options.selection(opened.identities), frozenset(opened.done),
                      options, notify, on_ready=counts.restart, head=head)
            counts.skipped, counts.failed_before = len(opened.done), opened.failed
            if on_progress is not None:
                counts.total = runner.total(job)
            with contextlib.closing(runner.records(job)) as records:
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


def with_head(options: RunOptions, notify: Notify) -> tuple[Head, RunOptions]:
    """The options' head, loaded and checked against the run's weights, and the options
    with top-k at most its class count (said once, through ``notify``); a preprocessing
    other than the head's is said too."""
    from ..results.heads import load_head, preprocessing_record
    from ..store.artifacts import network_key

    head = load_head(options.head)
    head.check_network(network_key(options.weights), options.head)
    count = len(head.classes)
    if options.top_k > count:
        notify(f"top-{options.top_k} asked for, but the head has {count} classes: "
               f"each image gets all {count}")
        options = replace(options, top_k=count)
    trained = head.metadata.get("preprocessing", {})
    used = preprocessing_record(options.preprocessing)
    if trained and {key: trained.get(key) for key in used} != used:
        notify(f"the head was trained on images resized by {trained.get('resize')} "
               f"({trained.get('interpolation')}), this run resizes by {used['resize']} "
               f"({used['interpolation']}): its scores may be off")
    return head, options


@dataclass
class _Counts:
    classified: int = 0
    failed: int = 0
    skipped: int = 0
    failed_before: int = 0
    total: int | None = None
    started: float = field(default_factory=time.perf_counter)

    def restart(self) -> None:
        """Start the clock again: the engine is ready, the images begin."""
        self.started = time.perf_counter()

    def add(self, record: Record) -> None:
        self.classified += record.error is None
        self.failed += record.error is not None

    def progress(self) -> RunProgress:
        return RunProgress(self.classified + self.failed, self.failed, self.total,
                           time.perf_counter() - self.started)

    def summary(self, output: Path | None) -> RunSummary:
        return RunSummary(self.classified, self.failed, self.skipped, self.failed_before,
                          time.perf_counter() - self.started, output)


class _NoWriter:
    """The writer of a run without a sink: records go only to the callbacks."""

    count = 0

    def write(self, record: Record) -> None:
        pass

    def close(self) -> None:
        pass


__all__ = ["Job", "LocalRunner", "RunInterrupted", "RunOptions", "RunProgress", "RunSummary",
           "Runner", "open_sink", "run"]
