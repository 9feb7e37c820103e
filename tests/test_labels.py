"""The class index ships with the package and is Keras's file, byte for byte."""

from __future__ import annotations

import hashlib

import numpy as np

from irv2cli.results.labels import class_index_path, decode_top_k, imagenet_labels


def test_class_index_is_byte_identical_to_keras_pinned_file():
    digest = hashlib.md5(class_index_path().read_bytes()).hexdigest()
    assert digest == "c2c37ea517e94d9795004a39431a14cb"


def test_labels_are_the_1000_classes_in_wordnet_order():
    labels = imagenet_labels()
    assert len(labels) == 1000
    assert (labels[0].wnid, labels[0].label) == ("n01440764", "tench")
    assert [c.wnid for c in labels] == sorted(c.wnid for c in labels)


def test_top_k_is_sorted_by_score_with_ranks_from_one():
    probabilities = np.zeros(1000, np.float32)
    probabilities[[5, 700, 42]] = [0.2, 0.5, 0.3]
    top = decode_top_k(probabilities, 3)
    assert [(p.rank, p.index, p.score) for p in top] == [
        (1, 700, 0.5), (2, 42, 0.30000001192092896), (3, 5, 0.20000000298023224)]
    assert top[0].wnid == imagenet_labels()[700].wnid
