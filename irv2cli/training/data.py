"""The folders a head is trained on: one subfolder per class, or ``train/`` and ``val/``
each holding the same class subfolders.

Class names are the folder names, exactly (any Unicode); a name that is not valid UTF-8
is refused, since a head stores its class names as text. What cannot be used is refused
in one ``TrainingDataError`` naming the folder, before any image is embedded; files
beside the class folders belong to no class and are said, then left out.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import TrainingDataError
from ..inputs.paths import InputSelection, iter_image_paths
from ..results.writers import shown

MIN_TRAIN = 4  # images of each class to fit on
MIN_VAL = 1  # and to validate on
MIN_IMAGES = MIN_TRAIN + MIN_VAL  # per class, when the validation images are split off
SPLIT_FOLDERS = ("train", "val")


@dataclass(frozen=True)
class Example:
    """One image file and the index of its class."""

    path: str
    label: int


@dataclass(frozen=True)
class TrainingData:
    """What ``root`` holds: the ``classes`` (sorted), the ``train`` examples and, if it has
    a ``val/`` folder, the ``val`` ones (else ``None``: split off by ``split``), and the
    ``stray`` files beside the class folders, which belong to no class."""

    root: Path
    classes: tuple[str, ...]
    train: tuple[Example, ...]
    val: tuple[Example, ...] | None
    stray: tuple[str, ...] = ()

    @property
    def examples(self) -> tuple[Example, ...]:
        return self.train + (self.val or ())


def find_data(root: str | os.PathLike, selection: InputSelection | None = None
              ) -> TrainingData:
    """The classes and images under ``root`` (see the module's description); the images
    of each class folder are its files that ``selection`` takes, at any depth."""
    root, selection = Path(root), selection or InputSelection()
    if not root.is_dir():
        raise TrainingDataError(f"{shown(root)} is not a folder: give a folder holding one "
                                "subfolder of images per class.")
    folders, stray = _entries(root, selection)
    if all(name in folders for name in SPLIT_FOLDERS):
        stray += [os.path.join(root, name) for name in sorted(folders)
                  if name not in SPLIT_FOLDERS]
        train_folders, train_stray = _entries(root / "train", selection)
        val_folders, val_stray = _entries(root / "val", selection)
        _check_same_classes(root, train_folders, val_folders)
        classes = _classes(root / "train", train_folders)
        train = _examples(root / "train", classes, selection, MIN_TRAIN, "train/")
        val = _examples(root / "val", classes, selection, MIN_VAL, "val/")
        return TrainingData(root, classes, train, val,
                            tuple(stray + train_stray + val_stray))
    classes = _classes(root, folders)
    return TrainingData(root, classes, _examples(root, classes, selection, MIN_IMAGES),
                        None, tuple(stray))


def _entries(folder: Path, selection: InputSelection) -> tuple[list[str], list[str]]:
    """The names of ``folder``'s subfolders, and the paths of the files beside them
    (hidden ones only if ``selection`` includes them)."""
    folders, files = [], []
    try:
        entries = sorted(os.scandir(folder), key=lambda entry: entry.name)
    except OSError as exc:
        raise TrainingDataError(f"{shown(folder)}: cannot list it ({exc.strerror}).") from None
    for entry in entries:
        if entry.name.startswith(".") and not selection.include_hidden:
            continue
        try:
            is_folder = entry.is_dir()
        except OSError:
            is_folder = False
        (folders if is_folder else files).append(entry.name if is_folder else entry.path)
    return folders, files


def _classes(folder: Path, names: list[str]) -> tuple[str, ...]:
    for name in names:
        try:
            name.encode("utf-8")
        except UnicodeEncodeError:
            raise TrainingDataError(
                f"{shown(folder / name)}: a class folder's name is not valid UTF-8, and a "
                "head stores class names as text; rename the folder.") from None
    if len(names) < 2:
        found = f"one class folder ({shown(names[0])})" if names else "no class folder"
        raise TrainingDataError(
            f"{shown(folder)} holds {found}; a head needs at least two: one subfolder per "
            "class, each holding that class's images.")
    return tuple(names)


def _check_same_classes(root: Path, train: list[str], val: list[str]) -> None:
    only_train, only_val = sorted(set(train) - set(val)), sorted(set(val) - set(train))
    if only_train or only_val:
        parts = [f"only in {where}: {', '.join(shown(name) for name in names[:5])}"
                 + (f" and {len(names) - 5} more" if len(names) > 5 else "")
                 for where, names in (("train/", only_train), ("val/", only_val)) if names]
        raise TrainingDataError(f"{shown(root)}: train/ and val/ must hold the same class "
                                f"folders ({'; '.join(parts)}).")


def _examples(folder: Path, classes: tuple[str, ...], selection: InputSelection,
              minimum: int, within: str = "") -> tuple[Example, ...]:
    """Every file of each class folder, labelled; a class with fewer than ``minimum``
    files is refused (all such classes in one message)."""
    examples, small = [], []
    for label, name in enumerate(classes):
        files = list(iter_image_paths([str(folder / name)], selection))
        if not files:
            raise TrainingDataError(f"class {shown(name)} ({shown(folder / name)}) holds no "
                                    "images: add some, or remove the folder.")
        if len(files) < minimum:
            small.append((name, len(files)))
        examples += [Example(path, label) for path in files]
    if small:
        raise too_few(small, minimum, within, "images")
    return tuple(examples)


def too_few(small: list[tuple[str, int]], minimum: int, within: str, what: str
            ) -> TrainingDataError:
    """The error for classes (name, count) with fewer than ``minimum`` ``what``."""
    names = ", ".join(f"{shown(name)} ({count})" for name, count in small[:3])
    more = f" and {len(small) - 3} more" if len(small) > 3 else ""
    need = (f"{MIN_TRAIN} to fit on and {MIN_VAL} to validate" if minimum == MIN_IMAGES
            else "to fit on" if within == "train/" else "to validate")
    are = "class has" if len(small) == 1 else "classes have"
    return TrainingDataError(
        f"{len(small)} {are} fewer than {minimum} {within}{what} ({names}{more}): each class "
        f"needs at least {minimum} ({need}); add images, or merge or remove those classes.")


def split(labels: np.ndarray, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """A stratified, seeded split of example indices into (train, val): of each class's
    ``n`` examples, ``round(n * fraction)`` validate (at least ``MIN_VAL``, and never so
    many that fewer than ``MIN_TRAIN`` are left to fit on), chosen by a generator seeded
    with ``seed`` and the class, so adding images to one class leaves the others' split
    as it was."""
    train, val = [], []
    for label in np.unique(labels):
        members = np.flatnonzero(labels == label)
        order = np.random.default_rng([seed, int(label)]).permutation(members)
        count = min(max(MIN_VAL, round(len(members) * fraction)), len(members) - MIN_TRAIN)
        val += sorted(order[:count].tolist())
        train += sorted(order[count:].tolist())
    return np.array(sorted(train), dtype=np.int64), np.array(sorted(val), dtype=np.int64)
