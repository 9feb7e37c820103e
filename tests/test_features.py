"""Named outputs: every engine gives the 1536-d features beside the probabilities, equal to
keras.applications' feature extractor, and notop weights give the features alone.

Both artifacts, top and notop, are the session's (``built_runtime``, ``notop_runtime``).
"""

from __future__ import annotations

import shutil
from collections.abc import Callable

import numpy as np
import onnxruntime as ort
import pytest
from support import predict

from irv2cli.engines.base import Engine
from irv2cli.engines.onnx_runtime import OnnxEngine
from irv2cli.errors import EngineError
from irv2cli.inputs.images import load_input
from irv2cli.pipeline.classifier import Classifier
from irv2cli.spec import FEATURES, PROBABILITIES, SPEC
from irv2cli.store.artifacts import artifact_path

NOTOP_ERROR = r"feature-extractor \(notop\) weights: they give features, not classes"
OUTPUTS = {"top": (PROBABILITIES, FEATURES), "notop": (FEATURES,)}


@pytest.fixture(scope="module")
def images(samples) -> np.ndarray:
    """Three real photos and one noise image, preprocessed."""
    photos = [load_input(samples / name) for name in ("chelsea.jpg", "coffee.jpg", "rocket.jpg")]
    noise = np.random.default_rng(5).uniform(-1, 1, (299, 299, 3)).astype("float32")
    return np.stack([*photos, noise])


@pytest.fixture(scope="module")
def engine_for(request) -> Callable[[str, str], Engine]:
    """``engine_for(kind, backend)``: a real engine for the "top" or "notop" weights, made
    on first use and shared by the module's tests."""
    made: dict[tuple[str, str], Engine] = {}

    def engine(kind: str, backend: str) -> Engine:
        if (kind, backend) not in made:
            weights = request.getfixturevalue(f"{kind}_weights")
            if backend == "keras":
                from irv2cli.engines.keras_engine import KerasEngine

                made[kind, backend] = KerasEngine(weights)
            else:
                runtime = request.getfixturevalue(
                    "built_runtime" if kind == "top" else "notop_runtime")
                made[kind, backend] = OnnxEngine(runtime / artifact_path(weights).name)
        return made[kind, backend]

    return engine


@pytest.mark.slow
@pytest.mark.parametrize("backend", ["onnx", "keras"])
@pytest.mark.parametrize("kind", ["top", "notop"])
def test_features_agree_with_the_keras_feature_extractor(engine_for, reference_notop, images,
                                                         kind, backend):
    engine = engine_for(kind, backend)
    assert engine.outputs == OUTPUTS[kind]
    outputs = engine(images)
    assert tuple(outputs) == OUTPUTS[kind]
    expected = reference_notop(images).numpy()
    assert outputs[FEATURES].shape == (len(images), SPEC.feature_dim)
    assert np.abs(outputs[FEATURES] - expected).max() < 1e-4
    assert np.abs(expected[0] - expected[1]).max() > 0.01  # they depend on the image


@pytest.mark.slow
@pytest.mark.parametrize("backend", ["onnx", "keras"])
def test_classifying_with_notop_weights_is_a_plain_error(engine_for, images, backend):
    with pytest.raises(EngineError, match=NOTOP_ERROR):
        Classifier(engine_for("notop", backend)).classify_arrays(images[:1])


@pytest.mark.slow
def test_predict_with_notop_weights_says_they_give_no_classes(notop_runtime, notop_weights,
                                                              cache, samples):
    shutil.copytree(notop_runtime, cache.irv2 / "runtime",
                    ignore=shutil.ignore_patterns("*.lock"))
    result = predict(samples / "coffee.jpg", "--weights", notop_weights)
    assert result.exit_code == 1
    assert "feature-extractor (notop) weights" in result.stderr
    assert "Traceback" not in result.output and "KeyError" not in result.output


@pytest.mark.slow
def test_onnx_export_names_each_output_by_its_dict_key(tmp_path):
    import keras

    from irv2cli.export.onnx_graph import export_onnx

    inputs = keras.Input((8, 8, 3))
    pooled = keras.layers.GlobalAveragePooling2D()(keras.layers.Conv2D(4, 3)(inputs))
    scores = keras.layers.Dense(5, activation="softmax")(pooled)
    model = keras.Model(inputs, {"scores": scores, "pooled": pooled})
    session = ort.InferenceSession(str(export_onnx(model, tmp_path / "two.onnx")),
                                   providers=["CPUExecutionProvider"])
    assert [output.name for output in session.get_outputs()] == ["scores", "pooled"]
    x = np.random.default_rng(0).uniform(-1, 1, (2, 8, 8, 3)).astype("float32")
    expected = model(x)
    for name, got in zip(["scores", "pooled"], session.run(None, {"images": x}), strict=True):
        assert np.abs(got - expected[name].numpy()).max() < 1e-5
