"""How a head does on the validation images: top-1 (and top-5), per-class precision,
recall, F1 and counts, and the confusion matrix. Plain NumPy."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Evaluation:
    """``confusion[i, j]``: validation images of class i predicted as class j."""

    confusion: np.ndarray
    top1: float
    top5: float | None  # only with more than 5 classes
    precision: np.ndarray
    recall: np.ndarray
    f1: np.ndarray
    support: np.ndarray  # validation images per class

    def summary(self) -> dict:
        return {"val_images": int(self.support.sum()), "top1": round(self.top1, 6),
                **({"top5": round(self.top5, 6)} if self.top5 is not None else {})}


def evaluate(probabilities: np.ndarray, labels: np.ndarray) -> Evaluation:
    """The evaluation of (N, C) ``probabilities`` against the true ``labels`` (N,)."""
    classes = probabilities.shape[1]
    predicted = probabilities.argmax(axis=1)
    confusion = np.zeros((classes, classes), dtype=np.int64)
    np.add.at(confusion, (labels, predicted), 1)
    hits = np.diag(confusion).astype(np.float64)
    support, claimed = confusion.sum(axis=1), confusion.sum(axis=0)
    precision = np.divide(hits, claimed, out=np.zeros(classes), where=claimed > 0)
    recall = np.divide(hits, support, out=np.zeros(classes), where=support > 0)
    both = precision + recall
    f1 = np.divide(2 * precision * recall, both, out=np.zeros(classes), where=both > 0)
    top5 = None
    if classes > 5:
        best5 = np.argsort(-probabilities, axis=1, kind="stable")[:, :5]
        top5 = float((best5 == labels[:, None]).any(axis=1).mean())
    return Evaluation(confusion, float((predicted == labels).mean()), top5, precision,
                      recall, f1, support)
