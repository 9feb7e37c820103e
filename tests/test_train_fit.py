"""Fitting a head on feature matrices, in-process and without the network: what it chooses,
that it is scikit-learn's own fit, deterministic, and weighted by class."""

from __future__ import annotations

import numpy as np
import pytest

from irv2cli.results.heads import Head
from irv2cli.training.fit import STRENGTHS, fit_head, model
from irv2cli.training.metrics import evaluate

pytest.importorskip("sklearn")


def clusters(classes: int, per_class, dim: int = 1536, noise: float = 2.0, seed: int = 0):
    """Non-negative features (like the network's) around one centre per class (the same
    centres whatever the ``seed`` of the noise)."""
    rng = np.random.default_rng(seed)
    counts = per_class if isinstance(per_class, list) else [per_class] * classes
    centres = np.random.default_rng(100).gamma(1.0, 0.5, (classes, dim))
    labels = np.repeat(np.arange(classes), counts)
    features = np.maximum(centres[labels] + rng.normal(0, noise, (len(labels), dim)), 0)
    return features.astype(np.float32), labels


def test_the_head_is_scikit_learns_fit_of_the_same_matrix():
    x, y = clusters(4, 30)
    xv, yv = clusters(4, 10, seed=1)
    fitted = fit_head(x, y, xv, yv, classes=4)
    head = Head(fitted.weights, fitted.bias, ("a", "b", "c", "d"))
    reference = model(fitted.c, balance=True).fit(x, y)
    assert np.array_equal(head.probabilities(xv).argmax(1), reference.predict(xv))
    np.testing.assert_allclose(head.probabilities(xv), reference.predict_proba(xv), atol=1e-5)
    assert fitted.chosen_by == "the validation images" and fitted.c in STRENGTHS


def test_two_classes_give_the_same_probabilities_as_scikit_learns_binary_fit():
    x, y = clusters(2, 20, noise=4.0)
    fitted = fit_head(x, y, x, y, classes=2)
    reference = model(fitted.c, balance=True).fit(x, y)
    probabilities = Head(fitted.weights, fitted.bias, ("no", "yes")).probabilities(x)
    np.testing.assert_allclose(probabilities, reference.predict_proba(x), atol=1e-5)


def test_few_validation_images_choose_the_strength_by_cross_validation():
    x, y = clusters(3, 4)
    xv, yv = clusters(3, 1, seed=1)
    fitted = fit_head(x, y, xv, yv, classes=3)
    assert fitted.chosen_by == "4-fold cross-validation on the training images"
    assert set(fitted.scores) == set(STRENGTHS)


def test_the_same_seed_gives_the_same_head():
    x, y = clusters(3, 8, noise=6.0)
    xv, yv = clusters(3, 2, seed=1)
    first, second = (fit_head(x, y, xv, yv, classes=3, seed=7) for _ in range(2))
    assert np.array_equal(first.weights, second.weights)
    assert np.array_equal(first.bias, second.bias) and first.c == second.c


def overlapping(counts: list[int], seed: int):
    """Two overlapping classes in two dimensions: where the boundary goes is up to the
    weighting."""
    rng = np.random.default_rng(seed)
    labels = np.repeat([0, 1], counts)
    features = rng.normal(0, 1, (len(labels), 2)) + labels[:, None] * 1.5
    return features.astype(np.float32), labels


def test_balancing_weights_a_small_class_as_much_as_a_large_one():
    x, y = overlapping([300, 15], seed=3)
    xv, yv = overlapping([200, 200], seed=4)
    recall = {}
    for balance in (False, True):
        fitted = fit_head(x, y, xv, yv, classes=2, balance=balance)
        probabilities = Head(fitted.weights, fitted.bias, ("big", "small")).probabilities(xv)
        recall[balance] = evaluate(probabilities, yv).recall[1]
    assert recall[False] < 0.6 < 0.75 < recall[True]


def test_the_evaluation_counts_what_each_class_became():
    probabilities = np.eye(6)[[0, 1, 2, 3, 4, 5, 0, 0]] * 0.9 + 0.01
    labels = np.array([0, 1, 2, 3, 4, 5, 1, 0])
    evaluation = evaluate(probabilities, labels)
    assert evaluation.top1 == 7 / 8 and evaluation.top5 == 1.0
    assert evaluation.confusion[1, 0] == 1 and evaluation.confusion.sum() == 8
    assert evaluation.recall[1] == 0.5 and evaluation.precision[0] == 2 / 3
    assert list(evaluation.support) == [2, 2, 1, 1, 1, 1]
