"""irv2 summary: the plain description equals the Keras model, stage by stage and layer by
layer, and the command answers without importing TensorFlow."""

from __future__ import annotations

import json
import re
import subprocess
import sys

import pytest
from click.testing import CliRunner

from irv2cli.cli.main import cli
from irv2cli.network import architecture as arch
from irv2cli.spec import SPEC

TOTAL = 55_873_736
STAGE_NAMES = ["stem", "mixed_5b", "block35", "mixed_6a", "block17", "mixed_7a", "block8",
               "conv_7b", "avg_pool", "predictions"]
AUTO_NAME = re.compile(rf"^({'|'.join(arch.AUTO_NAMES.values())})(?:_(\d+))?$")


@pytest.fixture(scope="module")
def keras_model():
    """irv2cli's own network, as ``build_model()`` builds it."""
    from irv2cli.network.model import build_model

    return build_model()


def fresh_names(names: list[str]) -> list[str]:
    """Keras numbers unnamed layers (conv2d_7) across a session: renumber each prefix
    from its lowest number, as a fresh session would have named them."""
    parsed = [(m[1], int(m[2] or 0)) if (m := AUTO_NAME.match(name)) else (name, None)
              for name in names]
    lowest: dict[str, int] = {}
    for prefix, number in parsed:
        if number is not None:
            lowest[prefix] = min(lowest.get(prefix, number), number)
    renamed = []
    for prefix, number in parsed:
        shift = None if number is None else number - lowest[prefix]
        renamed.append(f"{prefix}_{shift}" if shift else prefix)
    return renamed


def keras_stages(model) -> list[tuple[tuple, int]]:
    """The model's layers cut where the description's stages end (Keras's layer order
    puts every layer of a stage between the ends of the stages around it): each
    stage's output shape and parameter count."""
    names = [layer.name for layer in arch.layers()]
    ends = [names.index(summary.last_layer) for summary in arch.stages()]
    starts = [0, *(end + 1 for end in ends[:-1])]
    return [(tuple(model.layers[end].output.shape[1:]),
             sum(layer.count_params() for layer in model.layers[start:end + 1]))
            for start, end in zip(starts, ends, strict=True)]


def invoke(*args: str) -> str:
    result = CliRunner().invoke(cli, ["summary", *args], env={"COLUMNS": "120"},
                                catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result.output


def test_description_adds_up_to_the_model_facts():
    counts = arch.parameter_counts()
    assert counts["total"] == SPEC.param_count == TOTAL
    assert sum(summary.parameters for summary in arch.stages()) == TOTAL
    assert [summary.stage.name for summary in arch.stages()] == STAGE_NAMES
    assert arch.stages()[-2].output_shape == (SPEC.feature_dim,)
    assert len(arch.layers()) == 782


@pytest.mark.slow  # builds Keras models
@pytest.mark.parametrize("model_fixture", ["keras_model", "reference_model"])
def test_stages_equal_the_keras_model(model_fixture, request):
    model = request.getfixturevalue(model_fixture)
    described = [(summary.output_shape, summary.parameters) for summary in arch.stages()]
    assert keras_stages(model) == described
    assert model.count_params() == TOTAL


@pytest.mark.slow  # builds a Keras model
def test_layers_and_weights_equal_the_keras_models_in_order(keras_model):
    ours = [(layer.name, layer.type, layer.output_shape, layer.weights, layer.parameters)
            for layer in arch.layers()]
    names = fresh_names([layer.name for layer in keras_model.layers])
    theirs = [(name, type(layer).__name__, tuple(layer.output.shape[1:]),
               tuple(tuple(weight.shape) for weight in layer.weights), layer.count_params())
              for name, layer in zip(names, keras_model.layers, strict=True)]
    assert ours == theirs
    scales = [run.scale for summary in arch.stages() for run in summary.stage.blocks
              for _ in range(run.count)]
    assert scales == [layer.scale for layer in keras_model.layers
                      if type(layer).__name__ == "ScaledResidual"]
    frozen = sum(int(weight.numpy().size) for weight in keras_model.non_trainable_weights)
    assert arch.parameter_counts()["non_trainable"] == frozen


def test_fresh_names_renumber_from_the_lowest():
    assert fresh_names(["input_layer_1", "conv2d_203", "conv2d_204", "block35_1", "conv_7b"]) \
        == ["input_layer", "conv2d", "conv2d_1", "block35_1", "conv_7b"]


def test_summary_prints_the_stage_table():
    out = invoke()
    for text in ("block35_1..10", "Inception-ResNet-A", "0.17", "block17_1..20", "0.1 ",
                 "block8_1..10", "0.2 x9", "1.0 linear x1", "1x1 128 → 1x7 160 → 7x1 192",
                 "concat → 1x1 2080 +bias", "17x17x1088", "22,549,120", "55,873,736 parameters"):
        assert text in out
    assert "[" not in out  # nothing read as markup, nothing left unrendered


def test_summary_json_lists_the_stages():
    document = json.loads(invoke("--format", "json"))
    assert document["parameters"] == {"total": TOTAL, "trainable": 55_813_192,
                                      "non_trainable": 60_544}
    stages = document["stages"]
    assert [stage["name"] for stage in stages] == STAGE_NAMES
    assert sum(stage["parameters"] for stage in stages) == TOTAL
    block8 = stages[STAGE_NAMES.index("block8")]
    assert block8["blocks"] == [{"count": 9, "scale": 0.2, "activation": "relu"},
                                {"count": 1, "scale": 1.0, "activation": None}]
    assert block8["branches"][1][1] == {"op": "Conv", "filters": 224, "kernel": [1, 3],
                                        "strides": 1, "padding": "same"}
    assert block8["output_shape"] == [8, 8, 2080]


def test_summary_layers_table_and_json():
    out = invoke("--layers")
    assert "block8_10_conv" in out and "ScaledResidual" in out and "3,194,880" in out
    layers = json.loads(invoke("--layers", "--format", "json"))["layers"]
    assert len(layers) == 782
    assert layers[0] == {"name": "input_layer", "type": "InputLayer",
                         "output_shape": [299, 299, 3], "parameters": 0}
    assert layers[-1]["name"] == "predictions"
    assert sum(layer["parameters"] for layer in layers) == TOTAL


@pytest.mark.slow  # starts a process
def test_summary_imports_no_tensorflow():
    """The stage table comes from the plain-Python description: nothing imports
    TensorFlow or Keras on this path (how fast it answers is a figure in the README,
    not an assertion)."""
    code = ("import sys\n"
            "from irv2cli.cli.main import cli\n"
            "cli(['summary'], standalone_mode=False)\n"
            "heavy = sorted(m for m in sys.modules if m.split('.')[0] in ('tensorflow', 'keras'))\n"
            "sys.exit(f'imported {heavy}' if heavy else 0)\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert "55,873,736" in done.stdout
