"""What a run asks of the runner that makes its records: the run's options, the job, and
the ``Runner`` protocol that this machine (``pipeline.local``) and a Ray cluster
(``cluster.runner``) implement.

Words used throughout: an *engine* runs the network on a batch (ONNX Runtime or Keras,
chosen by the *backend*); a *runner* is where a whole run goes, decoding and engines
included: this machine, or a Ray cluster.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from ..inputs.decoding import DecodeLimits
from ..inputs.images import Preprocessing
from ..inputs.paths import InputSelection, iter_image_paths, path_key
from ..spec import PROBABILITIES

if TYPE_CHECKING:
    from ..results.heads import Head
    from ..results.records import Record

Notify = Callable[[str], None]


@dataclass(frozen=True)
class RunOptions:
    """What a run reads, how it decodes and infers, and what it asks the network for.

    ``outputs`` names what each record carries: ``probabilities`` (the top-k
    predictions) and/or ``features`` (the 1536-d average-pooled vector). ``pixels``
    makes each decoded image's record carry its input pixels (299x299x3 uint8, e.g.
    for a report's thumbnails; no file writes them). ``resume``, ``overwrite`` and
    ``fmt`` apply when the sink is given as a path. ``excluded`` are files the caller
    writes meanwhile (their (device, inode), such as a report's), never read as inputs.
    ``head`` classifies into a head's own classes (see ``results.heads``): top-k is over
    them, at most as many as it has.
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
    excluded: frozenset[tuple[int, int]] = frozenset()
    # a head file (``irv2 train``): probabilities over its classes, from the features
    head: Path | None = None

    def selection(self, also_excluded: frozenset[tuple[int, int]] = frozenset()
                  ) -> InputSelection:
        """Which files of folders to take; never ``excluded`` nor ``also_excluded``."""
        return InputSelection(self.recursive, tuple(self.globs), self.include_hidden,
                              self.excluded | also_excluded)


@dataclass(frozen=True)
class Job:
    """What a runner is asked for: the records of every file of ``inputs`` that
    ``selection`` takes and whose ``path_key`` is not in ``done``, in any order.
    ``notify`` hears status messages (a download, a build); ``on_ready`` is called once
    the engine is ready, when the run's clock for images/s starts. ``head`` is the
    options' head, loaded and checked."""

    inputs: list[str]
    selection: InputSelection
    done: frozenset[str]
    options: RunOptions
    notify: Notify = lambda message: None
    on_ready: Callable[[], None] = lambda: None
    head: Head | None = None

    def todo(self) -> Iterator[str]:
        """The input paths not yet done, walked lazily in sorted order."""
        return (path for path in iter_image_paths(self.inputs, self.selection)
                if path_key(path) not in self.done)


class Runner(Protocol):
    """Where a run's records are made: ``pipeline.local.LocalRunner`` (this machine) or
    ``cluster.runner.RayRunner`` (a Ray cluster)."""

    def total(self, job: Job) -> int | None:
        """How many records ``job`` will give, if the runner can tell before it starts."""

    def records(self, job: Job) -> Iterator[Record]:
        """The records of ``job``, each input once."""
