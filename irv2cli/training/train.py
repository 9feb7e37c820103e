"""``train``: folders of the user's classes -> a head file, and how it does on validation.

1. **Find** the classes and images (``training.data``); what cannot be used is refused
   before anything is embedded, and an existing head file is refused unless
   ``overwrite``.
2. **Embed** what the feature cache (``store.features``) lacks, by the run API (the same
   run as ``irv2 embed``: isolated decoding, error records, any runner), keeping each
   image's features in the cache as it comes, so an interrupted run loses nothing done.
   A file that cannot be decoded is an error record, counted and left out.
3. **Split** off the validation images (unless ``val/`` holds them), **fit** the head
   (``training.fit``), **evaluate** it on them (``training.metrics``).
4. **Write** the head whole, or not at all (``results.heads.save_head``).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from ..errors import Hint, OutputError, TrainingDataError
from ..pipeline.job import Notify, Runner, RunOptions
from ..pipeline.run import RunInterrupted, RunProgress, run
from ..results.heads import Head, head_metadata, preprocessing_record, save_head
from ..results.records import Record
from ..results.writers import os_reason, shown
from ..spec import FEATURES
from ..store.artifacts import network_key
from ..store.features import FeatureCache, content_key
from .data import MIN_IMAGES, MIN_TRAIN, MIN_VAL, Example, TrainingData, find_data, split, too_few
from .fit import Fitted, fit_head
from .metrics import Evaluation, evaluate


@dataclass(frozen=True)
class TrainOptions:
    """How to train: ``val_split`` (the fraction of each class that validates, when there
    is no ``val/``), ``seed`` (the split and the folds), ``balance`` (weight classes
    inversely to their counts), ``overwrite`` (replace an existing head file), and
    ``run``: how images are read and embedded (weights, backend, precision, batch size,
    decoding workers and limits, preprocessing, hidden files and globs)."""

    val_split: float = 0.2
    seed: int = 0
    balance: bool = True
    overwrite: bool = False
    run: RunOptions = field(default_factory=RunOptions)


@dataclass(frozen=True)
class Trained:
    """What ``train`` did: the ``head`` written to ``output``; the ``data`` found; the
    validation ``examples`` with the head's ``probabilities`` for them and its
    ``evaluation``; the ``fit``; the images embedded now and found in the cache; the
    ``failed`` files (error records), left out."""

    head: Head
    output: Path
    data: TrainingData
    val: tuple[Example, ...]
    probabilities: np.ndarray
    evaluation: Evaluation
    fit: Fitted
    embedded: int
    cached: int
    failed: tuple[Record, ...]
    train_count: int


Stage = Callable[[str], None]


def train(data: str | os.PathLike, output: str | os.PathLike,
          options: TrainOptions = TrainOptions(), *, runner: Runner | None = None,
          notify: Notify = lambda message: None,
          on_record: Callable[[Record], None] | None = None,
          on_progress: Callable[[RunProgress], None] | None = None,
          on_stage: Stage = lambda stage: None) -> Trained:
    """Train a head on the class folders under ``data`` and write it to ``output`` (see
    the module's description). ``runner``, ``notify``, ``on_record`` and
    ``on_progress`` are the embedding run's (see ``pipeline.run``); ``on_stage`` hears
    ``"embedding"``, ``"fitting"`` and ``"writing"`` as each starts. Ctrl-C while
    embedding is ``RunInterrupted`` (what was embedded is cached: its ``cached`` says how
    many images' features); while fitting, a ``KeyboardInterrupt``; either way no head
    is written."""
    if not 0 < options.val_split < 1:
        raise ValueError(f"val_split must be between 0 and 1, not {options.val_split}")
    output = Path(output)
    _check_output(output, options.overwrite)
    run_options = replace(options.run, outputs=(FEATURES,), head=None, resume=False,
                          pixels=False)
    found = find_data(data, run_options.selection())
    for path in found.stray:
        notify(f"{shown(path)} is beside the class folders, in no class: left out")
    network = network_key(run_options.weights)
    preprocessing = preprocessing_record(run_options.preprocessing)
    cache = FeatureCache.for_setting(network, run_options.precision, **preprocessing)
    on_stage("embedding")
    features, failed, embedded, cached = _features(found.examples, cache, run_options,
                                                   runner, notify, on_record, on_progress)
    train_set, val_set = _usable(found, features, options)
    on_stage("fitting")
    x_train, y_train = _matrix(train_set, features)
    x_val, y_val = _matrix(val_set, features)
    fitted = fit_head(x_train, y_train, x_val, y_val, classes=len(found.classes),
                      balance=options.balance, seed=options.seed)
    head = Head(fitted.weights, fitted.bias, found.classes)
    probabilities = head.probabilities(x_val)
    evaluation = evaluate(probabilities, y_val)
    training = {
        "images": {"train": len(train_set), "val": len(val_set), "failed": len(failed)},
        "per_class": {name: {"train": int((y_train == i).sum()), "val": int((y_val == i).sum())}
                      for i, name in enumerate(found.classes)},
        "validation": "val/ folder" if found.val is not None else
                      f"split {options.val_split:g} of each class, seed {options.seed}",
        "class_weight": "balanced" if options.balance else "none",
        "seed": options.seed, **fitted.summary(), **evaluation.summary()}
    head = replace(head, metadata=head_metadata(
        found.classes, network, precision=run_options.precision,
        preprocessing=preprocessing, training=training))
    on_stage("writing")
    save_head(head, output)
    return Trained(head, output, found, val_set, probabilities, evaluation, fitted,
                   embedded, cached, tuple(failed), len(train_set))


def _check_output(output: Path, overwrite: bool) -> None:
    """Refuse, before anything runs, a head path that is a folder, or an existing file
    unless ``overwrite``."""
    if output.is_dir():
        raise OutputError(f"{shown(output)} is a folder; name the head file to write",
                          Hint.OTHER_OUTPUT)
    if output.exists() and not overwrite:
        raise OutputError(f"{shown(output)} already exists", Hint.OVERWRITE)
    if not output.parent.is_dir():
        raise OutputError(f"{shown(output.parent)}: no such folder for the head file",
                          Hint.OTHER_OUTPUT)


def _features(examples: tuple[Example, ...], cache: FeatureCache, options: RunOptions,
              runner: Runner | None, notify: Notify,
              on_record: Callable[[Record], None] | None,
              on_progress: Callable[[RunProgress], None] | None
              ) -> tuple[dict[str, np.ndarray], list[Record], int, int]:
    """The features of each example's file by path, from the cache or embedded now (and
    cached as each comes); the error records of the files that gave none; how many
    contents were embedded and found cached."""
    keys: dict[str, str] = {}
    failed: list[Record] = []
    for example in examples:
        try:
            keys[example.path] = content_key(example.path)
        except OSError as exc:
            failed.append(Record(example.path,
                                 error=f"{shown(example.path)}: cannot read it "
                                       f"({os_reason(exc)})"))
    by_key: dict[str, np.ndarray] = {}
    asked: set[str] = set()
    todo: dict[str, str] = {}  # one path per content not cached
    for path, key in keys.items():
        if key in by_key or key in asked:
            continue
        found = cache.get(key)
        if found is not None:
            by_key[key] = found
        else:
            todo[path] = key
            asked.add(key)
    cached = len(by_key)
    stored: list[str] = []  # what this run added to the cache

    def keep(record: Record) -> None:
        if record.error is None and record.features is not None:
            key = todo[record.path]
            by_key[key] = np.asarray(record.features, np.float32)
            if _unchanged(record.path, key):  # else the features are of other content
                cache.put(key, record.features)
                stored.append(key)
        else:
            failed.append(record)
        if on_record is not None:
            on_record(record)

    if todo:
        try:
            run(list(todo), None, options, runner=runner, notify=notify, on_record=keep,
                on_progress=on_progress)
        except RunInterrupted as interrupt:
            interrupt.cached = len(stored)
            raise
    features = {path: by_key[key] for path, key in keys.items() if key in by_key}
    failed_paths = {record.path for record in failed}
    for path, key in keys.items():  # a copy of a file that failed, failed too
        if key not in by_key and path not in failed_paths:
            copy = Record(path, error=f"{shown(path)}: its content is that of a file that "
                                      "could not be read")
            failed.append(copy)
            if on_record is not None:
                on_record(copy)
    return features, failed, len(todo) - sum(r.path in todo for r in failed), cached


def _unchanged(path: str, key: str) -> bool:
    """Whether the file at ``path`` still holds the content ``key`` (it was hashed before
    it was embedded: one changed meanwhile must not be cached under its old content)."""
    try:
        return content_key(path) == key
    except OSError:
        return False


def _usable(found: TrainingData, features: dict[str, np.ndarray], options: TrainOptions
            ) -> tuple[tuple[Example, ...], tuple[Example, ...]]:
    """The (train, val) examples that have features, split if there is no ``val/``; a
    class left with too few readable images is refused."""
    names = found.classes
    if found.val is None:
        usable = [e for e in found.train if e.path in features]
        _check_readable(names, found.train, usable, MIN_IMAGES, "")
        labels = np.array([e.label for e in usable])
        train_at, val_at = split(labels, options.val_split, options.seed)
        return tuple(usable[i] for i in train_at), tuple(usable[i] for i in val_at)
    train_set = [e for e in found.train if e.path in features]
    val_set = [e for e in found.val if e.path in features]
    _check_readable(names, found.train, train_set, MIN_TRAIN, "train/")
    _check_readable(names, found.val, val_set, MIN_VAL, "val/")
    return tuple(train_set), tuple(val_set)


def _check_readable(names: tuple[str, ...], every: tuple[Example, ...],
                    usable: list[Example], minimum: int, within: str) -> None:
    files = np.bincount([e.label for e in every], minlength=len(names))
    readable = np.bincount([e.label for e in usable], minlength=len(names))
    for label in np.flatnonzero(readable == 0):
        raise TrainingDataError(
            f"class {shown(names[label])}: none of its {files[label]} {within}files could be "
            "read as an image (each is listed above); replace them, or remove the class.")
    small = [(names[i], int(readable[i])) for i in np.flatnonzero(readable < minimum)]
    if small:
        raise too_few(small, minimum, within, "readable images")


def _matrix(examples: tuple[Example, ...], features: dict[str, np.ndarray]
            ) -> tuple[np.ndarray, np.ndarray]:
    x = np.stack([features[e.path] for e in examples]).astype(np.float32)
    return x, np.array([e.label for e in examples], dtype=np.int64)


__all__ = ["MIN_IMAGES", "MIN_TRAIN", "MIN_VAL", "TrainOptions", "Trained", "train"]
