"""The ImageNet class index, shipped as package data: no label download, ever."""

from __future__ import annotations

import difflib
import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cache
from importlib.resources import files

import numpy as np

from ..errors import ClassLookupError

WNID = re.compile(r"n\d{8}")


@dataclass(frozen=True)
class ClassLabel:
    """One ImageNet class: its index in the model's output, WordNet ID and name."""

    index: int
    wnid: str
    label: str


def class_index_path():
    """The shipped ``imagenet_class_index.json`` (byte-identical to Keras's)."""
    return files("irv2cli") / "data" / "imagenet_class_index.json"


@cache
def imagenet_labels() -> tuple[ClassLabel, ...]:
    """The 1000 classes in output order."""
    raw = json.loads(class_index_path().read_text(encoding="utf-8"))
    return tuple(ClassLabel(i, *raw[str(i)]) for i in range(len(raw)))


def find_class(query: str) -> ClassLabel:
    """The class ``query`` names: a WordNet ID (``n02123045``), an index (``0``..``999``) or
    a label. Labels match exactly, else ignoring case and with spaces for underscores
    (``"tiger cat"``); ``Cardigan`` (the corgi) and ``cardigan`` (the sweater) differ only
    in case. Raises ``ClassLookupError`` for an unknown class or an ambiguous label
    (``crane``: the bird and the machine), listing the WordNet IDs to choose from."""
    text = query.strip()
    labels = imagenet_labels()
    if text.isdecimal():
        if int(text) < len(labels):
            return labels[int(text)]
        raise ClassLookupError(f"class index {text} is out of range: 0 to {len(labels) - 1}.")
    if WNID.fullmatch(text):
        for label in labels:
            if label.wnid == text:
                return label
        raise ClassLookupError(f"{text} is not the WordNet ID of an ImageNet class.")
    return _by_label(text, labels)


def _folded(label: str) -> str:
    return label.casefold().replace(" ", "_")


def _by_label(text: str, labels: tuple[ClassLabel, ...]) -> ClassLabel:
    """The one class labelled ``text`` (see ``find_class``)."""
    matches = ([c for c in labels if c.label == text]
               or [c for c in labels if _folded(c.label) == _folded(text)])
    if len(matches) == 1:
        return matches[0]
    if matches:
        choices = ", ".join(f"{c.wnid} ({c.label}, index {c.index})" for c in matches)
        raise ClassLookupError(f"{text!r} names {len(matches)} ImageNet classes: {choices}; "
                               "name one by its WordNet ID.")
    close = difflib.get_close_matches(_folded(text), sorted({c.label for c in labels}), n=3)
    advice = f"; did you mean {' or '.join(map(repr, close))}?" if close else "."
    raise ClassLookupError(f"no ImageNet class is labelled {text!r}{advice}")


@dataclass(frozen=True)
class Prediction:
    """One row of a top-k answer."""

    rank: int
    index: int
    wnid: str
    label: str
    score: float


def decode_top_k(probabilities, k: int = 5,
                 classes: Sequence[ClassLabel] | None = None) -> list[Prediction]:
    """The ``k`` most probable classes of one probability vector, best first; ``classes``
    name them (default: ImageNet's)."""
    probabilities = np.asarray(probabilities)
    k = min(k, probabilities.shape[-1])
    best = np.argsort(-probabilities, kind="stable")[:k]
    return ranked(best, probabilities[best], classes)


def ranked(indices, scores, classes: Sequence[ClassLabel] | None = None) -> list[Prediction]:
    """Predictions for class ``indices`` with their ``scores``, best first as given;
    ``classes`` name them (default: ImageNet's; a head's own, see ``results.heads``)."""
    labels = imagenet_labels() if classes is None else classes
    return [Prediction(rank, int(i), labels[i].wnid, labels[i].label, float(score))
            for rank, (i, score) in enumerate(zip(indices, scores, strict=True), start=1)]
