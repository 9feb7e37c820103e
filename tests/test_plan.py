"""Every flag of ``predict`` and ``embed`` lands in the one ``RunPlan`` the command runs,
in the place that means what the flag says; combinations that cannot run are usage
errors before anything starts."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from irv2cli.cli import launch as launching
from irv2cli.cli.embed import embed
from irv2cli.cli.main import cli
from irv2cli.cli.predict import predict
from irv2cli.inputs.decoding import DecodeLimits
from irv2cli.inputs.images import Preprocessing
from irv2cli.spec import FEATURES, PROBABILITIES


@pytest.fixture
def planned(monkeypatch, tmp_path):
    """``planned(command, *args)``: the plan ``irv2 COMMAND ARGS`` would launch (nothing
    runs); arguments are relative to a fresh folder holding ``a.jpg``."""
    plans = []

    def capture(plan):
        plans.append(plan)
        return 0

    monkeypatch.setattr(launching, "launch", capture)
    monkeypatch.chdir(tmp_path)
    Path("a.jpg").touch()
    for variable in ("IRV2_RUNNER", "IRV2_ENGINE", "RAY_ADDRESS", "IRV2_RAY_NODE_IP",
                     "IRV2_BACKEND", "IRV2_PRECISION", "IRV2_DECODE_MEMORY",
                     "IRV2_DECODE_TIMEOUT", "IRV2_MAX_PIXELS"):
        monkeypatch.delenv(variable, raising=False)

    def plan_of(command: str, *args: str):
        result = CliRunner().invoke(cli, [command, *args], catch_exceptions=False)
        assert result.exit_code == 0, result.output
        return plans.pop()

    return plan_of


# Each flag: the arguments that set it, and what the plan then holds (on top of "a.jpg").
COMMON = {
    "inputs": (["b.jpg"], lambda p: p.inputs == ("a.jpg", "b.jpg")),
    "resume": (["--resume"], lambda p: p.options.resume),
    "overwrite": (["--overwrite"], lambda p: p.options.overwrite),
    "recursive": (["--no-recursive"], lambda p: not p.options.recursive),
    "globs": (["--glob", "*.png", "--glob", "*.jpg"],
              lambda p: p.options.globs == ("*.png", "*.jpg")),
    "include_hidden": (["--include-hidden"], lambda p: p.options.include_hidden),
    "batch_size": (["--batch-size", "3"], lambda p: p.options.batch_size == 3),
    "workers": (["--workers", "5"], lambda p: p.options.workers == 5),
    "decode_memory": (["--decode-memory", "512MiB"],
                      lambda p: p.options.decode_limits == DecodeLimits(512 << 20, 30.0)),
    "decode_timeout": (["--decode-timeout", "2.5"],
                       lambda p: p.options.decode_limits.timeout == 2.5),
    "quiet": (["-q"], lambda p: p.quiet),
    "verbose": (["-v"], lambda p: p.verbose),
    "backend": (["--backend", "keras"], lambda p: p.options.backend == "keras"),
    "precision": (["--precision", "int8"], lambda p: p.options.precision == "int8"),
    "weights": (["--weights", "a.jpg"], lambda p: p.options.weights == Path("a.jpg")),
    "resize": (["--resize", "squash"], lambda p: p.options.preprocessing.resize == "squash"),
    "interpolation": (["--interpolation", "nearest"],
                      lambda p: p.options.preprocessing.interpolation == "nearest"),
    "max_pixels": (["--max-pixels", "1000"], lambda p: p.options.preprocessing.max_pixels == 1000),
    "runner": (["--runner", "ray"], lambda p: type(p.runner).__name__ == "RayRunner"),
    "old_runner": (["--engine", "ray"], lambda p: type(p.runner).__name__ == "RayRunner"),
    "ray_address": (["--runner", "ray", "--ray-address", "10.0.0.1:6379"],
                    lambda p: getattr(p.runner, "address", None) == "10.0.0.1:6379"),
    "actors": (["--runner", "ray", "--actors", "3"],
               lambda p: getattr(p.runner, "actors", None) == 3),
    "ray_node_ip": (["--runner", "ray", "--ray-node-ip", "10.0.0.2"],
                    lambda p: getattr(p.runner, "node_ip", None) == "10.0.0.2"),
}
PREDICT = {
    **COMMON,
    "resume": (["--resume", "-o", "r.jsonl"], lambda p: p.options.resume),
    "overwrite": (["--overwrite", "-o", "r.jsonl"], lambda p: p.options.overwrite),
    "top_k": (["-k", "3"], lambda p: p.options.top_k == 3),
    "head": (["--head", "products.head"], lambda p: p.options.head == Path("products.head")),
    "fmt": (["--format", "csv"], lambda p: p.stdout_format == "csv" and p.options.fmt == "csv"),
    "output": (["-o", "r.jsonl"], lambda p: p.output == Path("r.jsonl")),
    "report": (["--report", "r.html"],
               lambda p: p.report == Path("r.html") and p.options.pixels),
}
EMBED = {
    **COMMON,
    "fmt": (["--format", "npy"], lambda p: p.options.fmt == "npy"),
    "output": (["-o", "shards/", "--runner", "ray"], lambda p: p.output == "shards/"),
}


@pytest.mark.parametrize(("command", "table"), [(predict, PREDICT), (embed, EMBED)],
                         ids=["predict", "embed"])
def test_every_flag_has_its_place_in_the_plan(command, table):
    assert {parameter.name for parameter in command.params} - {"help"} == set(table)


@pytest.mark.parametrize("flag", sorted(PREDICT))
def test_each_predict_flag_lands_in_the_plan(planned, flag):
    arguments, holds = PREDICT[flag]
    default = planned("predict", "a.jpg")
    plan = planned("predict", "a.jpg", *arguments)
    assert holds(plan)
    assert not holds(default)


@pytest.mark.parametrize("flag", sorted(EMBED))
def test_each_embed_flag_lands_in_the_plan(planned, flag):
    arguments, holds = EMBED[flag]
    default = planned("embed", "a.jpg", "-o", "f.parquet")
    plan = planned("embed", "a.jpg", "-o", "f.parquet", *arguments)
    assert holds(plan)
    assert not holds(default)


def test_the_defaults_ask_for_what_the_command_does(planned):
    classify = planned("predict", "a.jpg")
    assert classify.options.outputs == (PROBABILITIES,)
    assert classify.output is None and classify.stdout_format == "table"
    assert classify.runner is None  # this machine
    assert classify.options.preprocessing == Preprocessing()
    assert (classify.doing, classify.done) == ("classifying", "classified")
    features = planned("embed", "a.jpg", "-o", "f.parquet")
    assert features.options.outputs == (FEATURES,) and features.output == Path("f.parquet")
    assert (features.doing, features.done) == ("embedding", "embedded")


def test_the_runner_comes_from_its_variable_and_the_old_one(planned, monkeypatch):
    monkeypatch.setenv("IRV2_RUNNER", "ray")
    assert type(planned("predict", "a.jpg").runner).__name__ == "RayRunner"
    monkeypatch.delenv("IRV2_RUNNER")
    monkeypatch.setenv("IRV2_ENGINE", "ray")
    assert type(planned("predict", "a.jpg").runner).__name__ == "RayRunner"


@pytest.mark.parametrize(("arguments", "complaint"), [
    (["--runner", "local", "--engine", "ray"], "--runner local and --engine ray disagree"),
    (["--precision", "int8", "--backend", "keras"], "--precision int8 runs on the onnx backend"),
    (["--resume"], "--resume needs --output"),
    (["--overwrite"], "--overwrite needs --output or --report"),
    (["-o", "r.jsonl", "--format", "table"], "the table is for stdout"),
    (["-o", "r.html", "--report", "r.html"], "name the same file"),
])
def test_combinations_that_cannot_run_are_usage_errors(planned, arguments, complaint):
    result = CliRunner().invoke(cli, ["predict", "a.jpg", *arguments])
    assert result.exit_code == 2
    assert complaint in result.output


def test_the_help_of_every_command_ends_with_examples():
    for name in cli.list_commands(None):
        result = CliRunner().invoke(cli, [name, "--help"])
        assert result.exit_code == 0, name
        after_the_options = result.output.split("Options:")[1].split("Examples:")
        assert len(after_the_options) == 2, f"irv2 {name} --help ends with no examples"
        lines = [line.strip() for line in after_the_options[1].strip().splitlines()]
        assert 1 <= len(lines) <= 3 and all(line.startswith(f"irv2 {name}") for line in lines), (
            name, lines)
