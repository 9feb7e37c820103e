"""Read weights files and load them into the network.

Two layouts are accepted: the legacy topological-order HDF5 that Keras 2 wrote
(the official ImageNet files) and Keras 3's ``.weights.h5``. The legacy reader
uses h5py and NumPy only, so other runtimes can read the file without Keras.
``weights_include_top`` tells a full network's file from a feature extractor's (notop)
and refuses one that fits neither, without building the network: it compares the file's
shapes with ``data/weights_layout.json``, the network's weighted layers and their
variables' shapes in file order (a test keeps it equal to the model).
"""

from __future__ import annotations

import json
from functools import cache
from importlib import resources
from pathlib import Path

import h5py
import numpy as np

from ..errors import Hint, WeightsError
from ..store.weights import official_file

KERAS3_TOP = "layers/dense"
LayerWeights = tuple[str, list[np.ndarray]]
Layout = list[tuple[str, list[tuple[int, ...]]]]
"""Weighted layers in file order: each layer's name and its variables' shapes."""


def _attribute_list(group: h5py.Group, name: str) -> list[str]:
    """A string-list attribute, joined from chunks (``name0``, ``name1``...) if Keras split it."""
    if name in group.attrs:
        values = list(group.attrs[name])
    else:
        values, chunk = [], 0
        while f"{name}{chunk}" in group.attrs:
            values.extend(group.attrs[f"{name}{chunk}"])
            chunk += 1
    return [v.decode("utf8") if isinstance(v, bytes) else str(v) for v in values]


def _unreadable(path: Path, reason: object) -> WeightsError:
    """The error for a file that is not Keras HDF5 weights, with the remedy that fits it."""
    problem = f"{path}: not a readable Keras HDF5 weights file ({reason})"
    if official_file(path) is not None:
        return WeightsError(problem, Hint.REFETCH_WEIGHTS)
    return WeightsError(f"{problem}. Pass Inception-ResNet-V2 weights: the official .h5 "
                        "layout or a Keras 3 .weights.h5 file.")


def _read_layers(path: Path, take) -> list[tuple[str, list]]:
    """``take(dataset)`` for every variable of every weighted layer, in file order."""
    try:
        with h5py.File(path, "r") as f:
            root = f.get("model_weights", f)
            layers = []
            for layer_name in _attribute_list(root, "layer_names"):
                group = root[layer_name]
                names = _attribute_list(group, "weight_names")
                if names:
                    layers.append((layer_name, [take(group[n]) for n in names]))
    except (OSError, KeyError) as exc:
        raise _unreadable(path, exc) from exc
    if not layers:
        raise WeightsError(f"{path}: the file holds no layer weights.")
    return layers


def read_legacy_h5(path: str | Path) -> list[LayerWeights]:
    """The layers that carry weights, in file (topological) order, with their arrays."""
    return _read_layers(Path(path), np.asarray)


def read_legacy_layout(path: str | Path) -> Layout:
    """The file's weighted layers and their variables' shapes, without reading the arrays."""
    return _read_layers(Path(path), lambda dataset: tuple(dataset.shape))


def _legacy_order(layer) -> list:
    """A layer's variables in the order legacy HDF5 stores them: trainable first."""
    return list(layer.trainable_weights) + list(layer.non_trainable_weights)


def network_layout(model) -> Layout:
    """``model``'s weighted layers and their variables' shapes, in legacy HDF5 order."""
    return [(layer.name, [tuple(v.shape) for v in _legacy_order(layer)])
            for layer in model.layers if _legacy_order(layer)]


@cache
def expected_layout(include_top: bool = True) -> Layout:
    """The network's layout (see ``network_layout``), read from the package's data."""
    text = resources.files("irv2cli").joinpath("data/weights_layout.json").read_text()
    layout = [(name, [tuple(shape) for shape in shapes]) for name, shapes in json.loads(text)]
    return layout if include_top else layout[:-1]  # the top is the last layer, "predictions"


def check_layout(expected: Layout, found: Layout, source: str) -> None:
    """Raise ``WeightsError`` naming the first weighted layer of ``found`` that does not fit."""
    question = "Is this an Inception-ResNet-V2 weights file?"
    for index, ((name, want), (saved_name, got)) in enumerate(
            zip(expected, found, strict=False)):
        if want != got:
            raise WeightsError(
                f"{source}: weighted layer #{index} ({name}, saved as {saved_name}) does not "
                f"fit: the network expects shapes {want}, the file has {got}. {question}")
    if len(found) != len(expected):
        raise WeightsError(
            f"{source}: the network has {len(expected)} layers with weights, the file has "
            f"{len(found)}; the first {min(len(found), len(expected))} fit. {question}")


def weights_include_top(path: str | Path) -> bool:
    """Whether the weights file ``path`` holds the classifier too (the full network) or
    only the feature extractor (the official notop layout). Refuses, without TensorFlow,
    a file that fits neither, naming what does not fit."""
    path = Path(path)
    if not path.is_file():
        raise WeightsError(f"{path}: no such weights file.")
    if path.name.endswith(".weights.h5"):
        return _keras3_has_top(path)
    found = read_legacy_layout(path)
    include_top = len(found) != len(expected_layout(False))
    check_layout(expected_layout(include_top), found, str(path))
    return include_top


def _keras3_has_top(path: Path) -> bool:
    """Keras 3 names a saved layer by its type: the top is the network's one Dense."""
    try:
        with h5py.File(path, "r") as f:
            return KERAS3_TOP in f
    except OSError as exc:
        raise _unreadable(path, exc) from exc


def assign_legacy_weights(model, saved: list[LayerWeights], source: str) -> None:
    """Assign ``saved`` to ``model``'s weighted layers in order, checking every shape first."""
    check_layout(network_layout(model),
                 [(name, [a.shape for a in arrays]) for name, arrays in saved], source)
    targets = [layer for layer in model.layers if _legacy_order(layer)]
    for layer, (_, arrays) in zip(targets, saved, strict=True):
        for variable, array in zip(_legacy_order(layer), arrays, strict=True):
            variable.assign(array)


def load_weights(model, path: str | Path) -> None:
    """Load a legacy ``.h5`` or a Keras 3 ``.weights.h5`` file into ``model``."""
    path = Path(path)
    if not path.is_file():
        raise WeightsError(f"{path}: no such weights file.")
    if path.name.endswith(".weights.h5"):
        try:
            model.load_weights(path)
        except (ValueError, OSError, KeyError) as exc:
            raise WeightsError(f"{path}: does not fit the network: {exc}") from exc
        return
    assign_legacy_weights(model, read_legacy_h5(path), str(path))
