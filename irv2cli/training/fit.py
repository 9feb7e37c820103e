"""Fit a head: multinomial logistic regression on standardised features, L2-regularised,
its strength chosen on the validation images (or by cross-validation when they are few).

scikit-learn's ``LogisticRegression`` (L-BFGS) does the fitting, imported here only: a
head, once fitted, is plain NumPy (``results.heads``). The standardisation is folded into
the head's weights, so a head applies to raw features. Deterministic: L-BFGS from zeros
on data in a fixed order, and folds drawn from ``seed``.
"""

from __future__ import annotations

import time
import warnings
from dataclasses import dataclass

import numpy as np

# The inverse regularisation strengths tried (scikit-learn's C) on standardised features.
STRENGTHS = (0.001, 0.01, 0.1, 1.0, 10.0)
MAX_ITER = 1000
SELECT_ON_VAL = 5  # validation images every class needs for C to be chosen on them
MAX_FOLDS = 5


@dataclass(frozen=True)
class Fitted:
    """The fitted head's ``weights`` (C, 1536) and ``bias`` (C,) on raw features, float32;
    the strength chosen (``c``), how (``chosen_by``), each strength's score, whether
    L-BFGS converged, and how long it all took."""

    weights: np.ndarray
    bias: np.ndarray
    c: float
    chosen_by: str
    scores: dict[float, float]
    converged: bool
    seconds: float

    def summary(self) -> dict:
        return {"solver": "scikit-learn LogisticRegression (lbfgs), L2, standardised "
                          "features", "C": self.c, "chosen_by": self.chosen_by,
                "scores": {f"{c:g}": round(score, 6) for c, score in self.scores.items()},
                "converged": self.converged, "fit_seconds": round(self.seconds, 3)}


def model(c: float, balance: bool):
    """The scikit-learn pipeline a head is: standardise, then logistic regression with
    inverse L2 strength ``c``, classes weighted inversely to their counts if ``balance``."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    return make_pipeline(StandardScaler(), LogisticRegression(
        C=c, solver="lbfgs", max_iter=MAX_ITER, class_weight="balanced" if balance else None))


def fit_head(x_train: np.ndarray, y_train: np.ndarray, x_val: np.ndarray, y_val: np.ndarray,
             *, classes: int, balance: bool = True, seed: int = 0) -> Fitted:
    """The head fitted on (``x_train``, ``y_train``), labels 0..``classes``-1, with the
    strength of ``STRENGTHS`` that scores best: on the validation images if every class
    has ``SELECT_ON_VAL`` of them, else by stratified k-fold cross-validation on the
    training images. The score is balanced accuracy (``balance``) or accuracy, ties
    going to the stronger regularisation. One BLAS/OpenMP thread: on these sizes more
    only wait for each other (measured in docs/decisions.md)."""
    from sklearn.exceptions import ConvergenceWarning
    from threadpoolctl import threadpool_limits

    started = time.perf_counter()
    with threadpool_limits(1), warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ConvergenceWarning)
        counts = np.bincount(y_val, minlength=classes)
        if counts.min() >= SELECT_ON_VAL:
            chosen_by = "the validation images"
            fitted = {c: model(c, balance).fit(x_train, y_train) for c in STRENGTHS}
            scores = {c: _score(fitted[c], x_val, y_val, balance) for c in STRENGTHS}
            best = _best(scores)
            final = fitted[best]
        else:
            folds = _folds(y_train, seed)
            chosen_by = f"{folds.get_n_splits()}-fold cross-validation on the training images"
            scores = {c: float(np.mean([
                _score(model(c, balance).fit(x_train[fit], y_train[fit]), x_train[held],
                       y_train[held], balance)
                for fit, held in folds.split(x_train, y_train)])) for c in STRENGTHS}
            best = _best(scores)
            final = model(best, balance).fit(x_train, y_train)
    converged = not any(issubclass(w.category, ConvergenceWarning) for w in caught)
    weights, bias = _folded(final, classes)
    return Fitted(weights, bias, best, chosen_by, scores, converged,
                  time.perf_counter() - started)


def _score(fitted, x: np.ndarray, y: np.ndarray, balance: bool) -> float:
    from sklearn.metrics import accuracy_score, balanced_accuracy_score

    predicted = fitted.predict(x)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # a fold may lack a class: recall of none
        return float((balanced_accuracy_score if balance else accuracy_score)(y, predicted))


def _best(scores: dict[float, float]) -> float:
    """The strength with the best score; of equals, the smallest C (the strongest L2)."""
    return max(sorted(scores), key=lambda c: (scores[c], -c))


def _folds(y: np.ndarray, seed: int):
    from sklearn.model_selection import StratifiedKFold

    smallest = int(np.bincount(y).min())
    return StratifiedKFold(n_splits=max(2, min(MAX_FOLDS, smallest)), shuffle=True,
                           random_state=seed)


def _folded(pipeline, classes: int) -> tuple[np.ndarray, np.ndarray]:
    """The pipeline as one linear map of raw features: the scaler folded into the
    weights. Two classes: scikit-learn's one logistic row ``w`` is the softmax of
    ``[0, w]``, the same probabilities."""
    scaler, regression = pipeline[0], pipeline[-1]
    coef, intercept = regression.coef_, regression.intercept_
    if coef.shape[0] == 1 and classes == 2:
        coef = np.vstack([np.zeros_like(coef), coef])
        intercept = np.concatenate([[0.0], intercept])
    weights = coef / scaler.scale_
    bias = intercept - weights @ scaler.mean_
    return weights.astype(np.float32), bias.astype(np.float32)
