"""The ImageNet class index, shipped as package data: no label download, ever."""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import cache
from importlib.resources import files

import numpy as np


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


@dataclass(frozen=True)
class Prediction:
    """One row of a top-k answer."""

    rank: int
    index: int
    wnid: str
    label: str
    score: float


def decode_top_k(probabilities, k: int = 5) -> list[Prediction]:
    """The ``k`` most probable classes of one probability vector, best first."""
    probabilities = np.asarray(probabilities)
    k = min(k, probabilities.shape[-1])
    best = np.argsort(-probabilities, kind="stable")[:k]
    labels = imagenet_labels()
    return [
        Prediction(rank, int(i), labels[i].wnid, labels[i].label, float(probabilities[i]))
        for rank, i in enumerate(best, start=1)
    ]
