"""`irv2 export`: each artifact, loaded by its own runtime, agrees with keras.applications.

Every export takes 20-60 s (building the network, then the format's own writer), so each
format is exported once per module and shared by its tests. To cover both heads, onnx and
savedmodel export the classifier, openvino and keras the average-pooled feature extractor.
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from irv2cli.cli.main import cli
from irv2cli.inputs.images import load_input, to_input
from irv2cli.spec import EXPORT_FORMATS, SPEC
from irv2cli.store.weights import file_md5


def export(*args):
    return CliRunner().invoke(cli, ["export", *map(str, args)], catch_exceptions=False)


def softmax(logits: np.ndarray) -> np.ndarray:
    e = np.exp(logits - logits.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


@dataclass(frozen=True)
class Exported:
    fmt: str
    printed: list[str]
    artifact: Path
    contract: dict
    weights: Path
    include_top: bool


@pytest.fixture(scope="module")
def home(tmp_path_factory):
    """A home, cache and Keras home for the module's exports, which run before any test's own
    ``cache`` fixture. OpenVINO's usage telemetry (on unless opted out) keeps its files under
    HOME; the opt-out file there keeps it quiet and off the network."""
    home = tmp_path_factory.mktemp("export-home")
    (home / "intel").mkdir()
    (home / "intel" / "openvino_telemetry").write_text("0")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("HOME", str(home))
        patch.setenv("IRV2_HOME", str(home / "irv2"))
        patch.setenv("KERAS_HOME", str(home / "keras"))
        yield home


def run_export(fmt: str, output: Path, weights: Path, *options: str) -> Exported:
    result = export("--format", fmt, "--output", output, "--weights", weights, *options)
    assert result.exit_code == 0, result.output
    printed = result.stdout.splitlines()
    assert Path(printed[-1]).name.endswith("preprocessing.json")
    leftovers = [p.name for p in Path(printed[0]).parent.iterdir() if p.name.startswith(".")]
    assert leftovers == []
    return Exported(fmt, printed, Path(printed[0]), json.loads(Path(printed[-1]).read_text()),
                    weights, include_top="--no-top" not in options)


@pytest.fixture(scope="module")
def onnx_export(home, top_weights, tmp_path_factory) -> Exported:
    return run_export("onnx", tmp_path_factory.mktemp("onnx") / "irv2.onnx", top_weights)


@pytest.fixture(scope="module")
def openvino_export(home, notop_weights, tmp_path_factory) -> Exported:
    pytest.importorskip("openvino")
    # No suffix given: .xml is added, and the weights go to the .bin beside it.
    return run_export("openvino", tmp_path_factory.mktemp("openvino") / "features",
                      notop_weights, "--no-top", "--pooling", "avg")


@pytest.fixture(scope="module")
def savedmodel_export(home, top_weights, tmp_path_factory) -> Exported:
    # An older SavedModel is in the way: --force replaces it.
    output = tmp_path_factory.mktemp("savedmodel") / "irv2"
    output.mkdir()
    (output / "saved_model.pb").write_bytes(b"an older export")
    (output / "stale.txt").write_text("from the older export")
    return run_export("savedmodel", output, top_weights, "--force")


@pytest.fixture(scope="module")
def keras_export(home, notop_weights, tmp_path_factory) -> Exported:
    # An older export is in the way: --force replaces it and its contract.
    folder = tmp_path_factory.mktemp("keras")
    (folder / "features.keras").write_bytes(b"an older export")
    (folder / "features.keras.preprocessing.json").write_text("{}")
    return run_export("keras", folder / "features.keras", notop_weights, "--no-top",
                      "--pooling", "avg", "--force")


@pytest.fixture(scope="module")
def batch(samples) -> np.ndarray:
    """Two real photos, preprocessed as the contract says."""
    return np.stack([load_input(samples / name) for name in ("chelsea.jpg", "coffee.jpg")])


@pytest.fixture(scope="module")
def probabilities(reference_model, batch) -> np.ndarray:
    """keras.applications' answer for the batch, with the softmax the exported top has."""
    return softmax(reference_model(batch).numpy())


@pytest.fixture(scope="module")
def features(reference_notop, batch) -> np.ndarray:
    """keras.applications' average-pooled 1536-d features for the batch."""
    return reference_notop(batch).numpy()


def test_onnx_runs_in_onnxruntime_like_keras(onnx_export, batch, probabilities):
    import onnxruntime as ort

    assert onnx_export.printed == [str(onnx_export.artifact),
                                   f"{onnx_export.artifact}.preprocessing.json"]
    session = ort.InferenceSession(str(onnx_export.artifact), providers=["CPUExecutionProvider"])
    assert [i.name for i in session.get_inputs()] == [onnx_export.contract["input"]["name"]]
    assert [o.name for o in session.get_outputs()] == [onnx_export.contract["output"]["name"]]
    (got,) = session.run(None, {"images": batch})
    assert np.abs(got - probabilities).max() < 1e-4


def test_openvino_runs_in_openvino_like_keras(openvino_export, batch, features):
    import openvino as ov

    xml = openvino_export.artifact
    assert xml.name == "features.xml"
    assert openvino_export.printed == [str(xml), str(xml.with_suffix(".bin")),
                                       f"{xml}.preprocessing.json"]
    # f32 explicitly: on CPUs with bf16 units OpenVINO would otherwise pick bf16.
    compiled = ov.Core().compile_model(str(xml), "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
    assert compiled.input(0).get_any_name() == openvino_export.contract["input"]["name"]
    assert compiled.output(0).get_any_name() == openvino_export.contract["output"]["name"]
    got = compiled({"images": batch})[0]
    assert np.abs(got - features).max() < 1e-4


def test_savedmodel_serves_in_tensorflow_like_keras(savedmodel_export, batch, probabilities):
    import tensorflow as tf

    folder = savedmodel_export.artifact
    assert savedmodel_export.printed == [str(folder), str(folder / "preprocessing.json")]
    assert not (folder / "stale.txt").exists()
    serve = tf.saved_model.load(str(folder)).signatures["serving_default"]
    contract = savedmodel_export.contract
    assert list(serve.structured_input_signature[1]) == [contract["input"]["name"]]
    outputs = serve(**{contract["input"]["name"]: tf.constant(batch)})
    assert list(outputs) == [contract["output"]["name"]]
    got = outputs[contract["output"]["name"]].numpy()
    assert np.abs(got - probabilities).max() < 1e-4


def test_keras_file_reloads_like_keras(keras_export, batch, features):
    import keras

    path = keras_export.artifact
    assert keras_export.printed == [str(path), f"{path}.preprocessing.json"]
    model = keras.saving.load_model(path)
    assert model.layers[0].name == keras_export.contract["input"]["name"]
    assert model.output_names == [keras_export.contract["output"]["name"]]
    got = keras.ops.convert_to_numpy(model(batch, training=False))
    assert np.abs(got - features).max() < 1e-4


@pytest.mark.slow  # runs every export (its fixture is requested by name)
@pytest.mark.parametrize("fmt", EXPORT_FORMATS)
def test_contract_describes_input_output_and_weights(fmt, request):
    exported: Exported = request.getfixturevalue(f"{fmt}_export")
    contract = exported.contract
    assert contract["format"] == fmt
    assert contract["model"] == {"name": "Inception-ResNet-V2",
                                 "include_top": exported.include_top,
                                 "pooling": None if exported.include_top else "avg"}
    source = contract["input"]
    assert source["layout"] == "NHWC"
    assert source["shape"] == ["batch", 299, 299, 3]
    assert (source["dtype"], source["channel_order"]) == ("float32", "RGB")
    assert (source["scaling"], source["range"]) == ("x / 127.5 - 1", [-1.0, 1.0])
    # mean/std say the same as irv2cli's own scaling
    pixels = np.random.default_rng(0).integers(0, 256, (4, 4, 3), dtype=np.uint8)
    scaled = (pixels - np.array(source["mean"])) / np.array(source["std"])
    assert np.allclose(scaled, to_input(Image.fromarray(pixels)), atol=1e-6)
    recommended = source["resize"]["recommended"]
    assert (recommended["method"], recommended["shorter_side"], recommended["crop"],
            recommended["interpolation"]) == ("center-crop", 333, [299, 299], "bicubic")
    assert "333" in recommended["description"] and "299x299" in recommended["description"]
    keras_recipe = source["resize"]["keras_load_img"]
    assert (keras_recipe["method"], keras_recipe["interpolation"]) == ("squash", "nearest")

    target = contract["output"]
    if exported.include_top:
        assert target["kind"] == "probabilities"
        assert target["shape"] == ["batch", SPEC.num_classes]
        assert target["classes"]["file"] == "irv2cli/data/imagenet_class_index.json"
        assert target["classes"]["md5"] == "c2c37ea517e94d9795004a39431a14cb"
    else:
        assert target["kind"] == "features"
        assert target["shape"] == ["batch", 1536]
        assert "1536-d" in target["meaning"] and "average" in target["meaning"]
    assert target["dtype"] == "float32"
    assert contract["weights"] == {"file": exported.weights.name,
                                   "md5": file_md5(exported.weights), "official": False}
    assert contract["files"] == [Path(p).name for p in exported.printed[:-1]]


@pytest.mark.parametrize("existing", ["irv2.onnx", "irv2.onnx.preprocessing.json"])
def test_existing_output_is_refused_without_force(existing, top_weights, tmp_path):
    (tmp_path / existing).write_bytes(b"mine")
    result = export("--format", "onnx", "--output", tmp_path / "irv2.onnx",
                    "--weights", top_weights)
    assert result.exit_code == 1
    assert f"{tmp_path / existing} already exists; pass --force to replace it." in result.output
    assert [p.name for p in tmp_path.iterdir()] == [existing]
    assert (tmp_path / existing).read_bytes() == b"mine"


def test_force_never_deletes_a_folder_that_is_not_a_saved_model(top_weights, tmp_path):
    (tmp_path / "work").mkdir()
    (tmp_path / "work" / "notes.txt").write_text("precious")
    result = export("--format", "savedmodel", "--output", tmp_path / "work",
                    "--weights", top_weights, "--force")
    assert result.exit_code == 1
    assert "holds no SavedModel" in result.output
    assert (tmp_path / "work" / "notes.txt").read_text() == "precious"


def test_unknown_format_is_a_usage_error(tmp_path):
    result = export("--format", "tflite", "--output", tmp_path / "irv2.tflite")
    assert result.exit_code == 2
    assert "Invalid value for '--format'" in result.output
    assert list(tmp_path.iterdir()) == []


def test_pooling_with_the_top_is_a_usage_error(tmp_path):
    result = export("--format", "onnx", "--output", tmp_path / "irv2.onnx", "--pooling", "avg")
    assert result.exit_code == 2
    assert "--pooling applies only without the top: add --no-top." in result.output


def test_openvino_missing_says_how_to_install_it(top_weights, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "openvino", None)  # import openvino raises ImportError
    result = export("--format", "openvino", "--output", tmp_path / "irv2.xml",
                    "--weights", top_weights)
    assert result.exit_code == 1
    assert "pip install 'irv2cli[openvino]'" in result.output
    assert list(tmp_path.iterdir()) == []
