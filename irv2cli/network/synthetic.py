"""Seeded random weights in the official file layout, for tests and benchmarks.

They make the network compute a real, input-dependent function, but they were
never trained: predictions made with them mean nothing. The official file
cannot be downloaded everywhere (CI runs offline), so equivalence tests and
``irv2 bench`` use these instead.
"""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np

from ..spec import SPEC


def randomize(model, seed: int = 0) -> None:
    """Give ``model`` seeded random weights with BatchNorm statistics calibrated on noise.

    Kernels keep their Glorot initialisation (seeded); biases and BatchNorm offsets get
    small random values; then one training-mode pass with momentum 0 sets every
    BatchNorm's moving mean and variance to the statistics it sees, so activations stay
    well scaled through all 244 BatchNorm layers and the output depends on the input.
    """
    import keras

    keras.utils.set_random_seed(seed)
    rng = np.random.default_rng(seed)
    for layer in model.layers:
        for variable in layer.weights:
            if variable.name == "kernel":
                initializer = keras.initializers.GlorotUniform(seed=int(rng.integers(2**31)))
                variable.assign(initializer(variable.shape))
            elif variable.name in {"bias", "beta"}:
                variable.assign(rng.normal(0.0, 0.1, variable.shape).astype("float32"))
    batch_norms = [layer for layer in model.layers
                   if isinstance(layer, keras.layers.BatchNormalization)]
    momenta = [layer.momentum for layer in batch_norms]
    for layer in batch_norms:
        layer.momentum = 0.0
    size = model.input_shape[1] or SPEC.input_size
    noise = rng.uniform(-1.0, 1.0, (4, size, size, 3)).astype("float32")
    model(noise, training=True)
    for layer, momentum in zip(batch_norms, momenta, strict=True):
        layer.momentum = momentum


def write_legacy_h5(model, path: str | Path) -> Path:
    """Write ``model``'s weights in the official (Keras 2, topological order) HDF5 layout."""
    from keras.src.legacy.saving.legacy_h5_format import save_weights_to_hdf5_group

    path = Path(path)
    with h5py.File(path, "w") as f:
        save_weights_to_hdf5_group(f, model)
    return path


def write_random_weights(path: str | Path, include_top: bool = True, seed: int = 0) -> Path:
    """Build the network, randomize it (see ``randomize``) and write the legacy .h5 file."""
    from .model import build_model

    model = build_model(include_top=include_top)
    randomize(model, seed)
    return write_legacy_h5(model, path)
