"""The network is keras.applications.InceptionResNetV2, layer for layer and number for number."""

from __future__ import annotations

import numpy as np
import pytest

from irv2cli.errors import WeightsError
from irv2cli.inputs.images import load_input
from irv2cli.network.h5weights import load_weights, weights_include_top
from irv2cli.network.model import build_model

pytestmark = pytest.mark.slow  # every test builds a Keras model


@pytest.fixture(scope="module")
def inputs(samples) -> np.ndarray:
    """Two real photos and one noise image, preprocessed."""
    photos = [load_input(samples / name) for name in ("chelsea.jpg", "rocket.jpg")]
    noise = np.random.default_rng(7).uniform(-1, 1, (299, 299, 3)).astype("float32")
    return np.stack([*photos, noise])


@pytest.fixture(scope="module")
def ours(top_weights):
    """``build_model`` with the top (logits out), loaded with the generated weights in the
    official layout, for the module: building one takes seconds."""
    model = build_model(classifier_activation=None)
    load_weights(model, top_weights)
    return model


def _kind(layer) -> tuple:
    return type(layer).__name__, [tuple(w.shape) for w in layer.weights]


def test_parameter_count_with_top(ours):
    assert ours.count_params() == 55_873_736


def test_layers_match_keras_one_for_one(ours, reference_model):
    assert len(ours.layers) == len(reference_model.layers) == 782
    kinds = [_kind(layer) for layer in ours.layers]
    reference_kinds = [_kind(layer) for layer in reference_model.layers]
    # CustomScaleLayer (Keras) and ScaledResidual (ours) compute the same sum.
    reference_kinds = [("ScaledResidual", w) if k == "CustomScaleLayer" else (k, w)
                       for k, w in reference_kinds]
    assert kinds == reference_kinds


def test_block_boundary_names_match_keras(ours, reference_model):
    names = {layer.name for layer in ours.layers}
    boundary = {name for name in (layer.name for layer in reference_model.layers)
                if name.startswith(("mixed_", "block", "conv_7b", "avg_pool", "predictions"))}
    # mixed_5b/6a/7a; 40 blocks' _mixed and _conv; 39 _ac; conv_7b(_bn, _ac); the top.
    assert len(boundary) == 3 + 40 + 40 + 39 + 3 + 2
    assert boundary <= names


def test_logits_match_keras_with_official_layout_weights(ours, reference_model, inputs):
    expected = reference_model(inputs).numpy()
    got = ours(inputs).numpy()
    assert np.abs(got - expected).max() < 1e-4
    # The generated weights make the output depend on the input.
    assert np.abs(expected[0] - expected[1]).max() > 0.1


def test_pooled_features_match_keras_without_top(reference_notop, notop_weights, inputs):
    ours = build_model(include_top=False, pooling="avg")
    load_weights(ours, notop_weights)
    got = ours(inputs).numpy()
    assert got.shape == (3, 1536)
    assert np.abs(got - reference_notop(inputs).numpy()).max() < 1e-4


def test_max_pooling_gives_1536_features():
    assert build_model(include_top=False, pooling="max").output_shape == (None, 1536)


def test_keras3_weights_file_loads(ours, reference_model, tmp_path, inputs):
    path = tmp_path / "model.weights.h5"
    ours.save_weights(path)
    assert weights_include_top(path)
    loaded = build_model(classifier_activation=None)
    load_weights(loaded, path)
    assert np.abs(loaded(inputs[:1]).numpy() - reference_model(inputs[:1]).numpy()).max() < 1e-4


def test_saved_model_reloads_in_safe_mode(tmp_path):
    import keras

    model = build_model(include_top=False, input_shape=(75, 75, 3), pooling="avg")
    path = tmp_path / "irv2.keras"
    model.save(path)
    reloaded = keras.saving.load_model(path, safe_mode=True)
    x = np.random.default_rng(0).uniform(-1, 1, (1, 75, 75, 3)).astype("float32")
    assert np.allclose(reloaded(x).numpy(), model(x).numpy(), atol=1e-5)


# Every shape is checked before any is assigned, so ``ours`` keeps its weights.
def test_notop_file_into_top_network_names_what_does_not_fit(ours, notop_weights):
    with pytest.raises(WeightsError, match=r"layers with weights.*notop\.h5|notop\.h5.*fit"):
        load_weights(ours, notop_weights)


def test_file_with_other_shapes_names_the_first_layer_that_does_not_fit(ours, tmp_path,
                                                                          inputs):
    from irv2cli.network.synthetic import write_legacy_h5

    other = build_model(classifier_activation=None, classes=10)
    path = write_legacy_h5(other, tmp_path / "ten_classes.h5")
    before = ours(inputs[:1]).numpy()
    with pytest.raises(WeightsError, match=r"#\d+ \(predictions, saved as predictions\)"):
        load_weights(ours, path)
    assert np.array_equal(ours(inputs[:1]).numpy(), before)  # nothing was assigned


def test_not_an_hdf5_file_is_a_clear_error(ours, tmp_path):
    path = tmp_path / "weights.h5"
    path.write_text("not hdf5")
    with pytest.raises(WeightsError, match="not a readable Keras HDF5 weights file"):
        load_weights(ours, path)
