"""Read weights files and load them into the network.

Two layouts are accepted: the legacy topological-order HDF5 that Keras 2 wrote
(the official ImageNet files) and Keras 3's ``.weights.h5``. The legacy reader
uses h5py and NumPy only, so other runtimes can read the file without Keras.
"""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np

from .errors import WeightsError

LayerWeights = tuple[str, list[np.ndarray]]


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


def read_legacy_h5(path: str | Path) -> list[LayerWeights]:
    """The layers that carry weights, in file (topological) order, with their arrays."""
    path = Path(path)
    try:
        with h5py.File(path, "r") as f:
            root = f.get("model_weights", f)
            layers = []
            for layer_name in _attribute_list(root, "layer_names"):
                group = root[layer_name]
                names = _attribute_list(group, "weight_names")
                if names:
                    layers.append((layer_name, [np.asarray(group[n]) for n in names]))
    except (OSError, KeyError) as exc:
        raise WeightsError(
            f"{path}: not a readable Keras HDF5 weights file ({exc}). "
            "Run `irv2 download-weights --force` to fetch a fresh copy."
        ) from exc
    if not layers:
        raise WeightsError(f"{path}: the file holds no layer weights.")
    return layers


def _legacy_order(layer) -> list:
    """A layer's variables in the order legacy HDF5 stores them: trainable first."""
    return list(layer.trainable_weights) + list(layer.non_trainable_weights)


def assign_legacy_weights(model, saved: list[LayerWeights], source: str) -> None:
    """Assign ``saved`` to ``model``'s weighted layers in order, checking every shape first."""
    targets = [layer for layer in model.layers if _legacy_order(layer)]
    for index, (layer, (saved_name, arrays)) in enumerate(zip(targets, saved, strict=False)):
        expected = [tuple(v.shape) for v in _legacy_order(layer)]
        found = [a.shape for a in arrays]
        if expected != found:
            raise WeightsError(
                f"{source}: weighted layer #{index} ({layer.name}, saved as {saved_name}) "
                f"does not fit: the network expects shapes {expected}, the file has {found}. "
                "Is this an Inception-ResNet-V2 file with the same top (--include-top/--no-top)?"
            )
    if len(saved) != len(targets):
        raise WeightsError(
            f"{source}: the network has {len(targets)} layers with weights, the file has "
            f"{len(saved)}; the first {min(len(saved), len(targets))} fit. "
            "Is this an Inception-ResNet-V2 file with the same top (--include-top/--no-top)?"
        )
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
