"""int8 on demand: ``irv2 quantize`` builds a statically quantized runtime from the user's
photos, measures it against fp32, caches it per calibration set; ``--precision int8``
runs it, and refuses in one line when there is none or it is damaged.

The real build runs once a session (``int8_runtime``: 8 calibration photos, checked on 8
others); the cache's behaviour is tested with builds that copy it (``int8_builds``). Stopping a
real build, and two at once, are in ``test_int8_attacks.py``.
"""

from __future__ import annotations

import json
import shutil
from collections import Counter
from pathlib import Path

import numpy as np
import onnx
import pytest
from click.testing import CliRunner
from support import predict, replace_with_folder, truncate

from irv2cli.cli.main import cli
from irv2cli.engines.base import load_engine
from irv2cli.engines.int8 import (
    CPUINFO_VARIABLE,
    SLOW_CPU,
    Int8Engine,
    int8_artifact_path,
    int8_unlikely_faster,
    load_int8_engine,
    read_report,
    report_path,
)
from irv2cli.engines.onnx_runtime import load_onnx_engine
from irv2cli.errors import CalibrationError, EngineError, Hint
from irv2cli.inputs.images import prepare, to_input
from irv2cli.pipeline.job import RunOptions
from irv2cli.pipeline.quantize import calibration_key, content_key, quantize
from irv2cli.spec import PROBABILITIES
from irv2cli.store.artifacts import artifact_path, checksum_path, checksums, data_path

QUANTIZED_OPS = {"QLinearConv", "QuantizeLinear", "DequantizeLinear", "ConvInteger",
                 "MatMulInteger", "QLinearMatMul"}


def cpuinfo(tmp_path: Path, flags: str) -> Path:
    """A /proc/cpuinfo stand-in whose CPU has ``flags``."""
    path = tmp_path / "cpuinfo"
    path.write_text(f"processor\t: 0\nflags\t\t: {flags}\n")
    return path


@pytest.fixture
def vnni_cpu(tmp_path, monkeypatch) -> None:
    """The CPU, as irv2 reads it, has AVX-512 VNNI (so no warning, whatever runs the tests)."""
    monkeypatch.setenv(CPUINFO_VARIABLE, str(cpuinfo(tmp_path, "fpu sse2 avx2 avx512_vnni")))


def quantize_command(*args):
    return CliRunner().invoke(cli, ["quantize", *map(str, args)], catch_exceptions=False)


def probabilities(engine, folder: Path) -> np.ndarray:
    """``engine``'s class probabilities for the photos in ``folder``, decoded here."""
    batch = to_input(np.stack([np.asarray(prepare(p)) for p in sorted(folder.iterdir())]))
    return engine(batch)[PROBABILITIES]


# --- what the real build gives ------------------------------------------------------------

def test_quantize_builds_an_int8_graph_with_a_quarter_of_the_weights(int8_runtime,
                                                                       top_weights):
    int8 = int8_runtime / int8_artifact_path(top_weights).name
    fp32 = int8_runtime / artifact_path(top_weights).name
    graph = onnx.load(int8, load_external_data=False)
    ops = Counter(node.op_type for node in graph.graph.node)
    assert ops["QLinearConv"] + ops["ConvInteger"] + ops["QuantizeLinear"] > 200, ops
    assert ops["Conv"] == 0 and set(ops) & QUANTIZED_OPS
    # like the fp32 artifact, its weights lie in the data file beside the graph, which names it
    named = {entry.value for tensor in graph.graph.initializer
             for entry in tensor.external_data if entry.key == "location"}
    assert named == {data_path(int8).name}
    assert data_path(int8).stat().st_size < data_path(fp32).stat().st_size / 3


def test_the_report_matches_a_direct_computation_on_the_same_images(
        int8_runtime, top_weights, calibration_images, check_images, cache):
    shutil.copytree(int8_runtime, cache.irv2 / "runtime")
    fp32 = probabilities(load_onnx_engine(top_weights), check_images)
    int8 = probabilities(load_int8_engine(top_weights), check_images)
    report = read_report(int8_artifact_path(top_weights))

    top1 = fp32.argmax(axis=1)
    assert report.check.images == 8
    assert report.check.top1 == np.mean(int8.argmax(axis=1) == top1)
    in_top5 = [t in np.argsort(p)[-5:] for t, p in zip(top1, int8, strict=True)]
    assert report.check.top5 == np.mean(in_top5)
    assert report.check.max_change == pytest.approx(np.abs(int8 - fp32).max(), rel=1e-6)
    # int8 is an approximation: close to fp32, but not fp32
    assert 0 < report.check.max_change < 0.2
    assert report.calibration_images == 8 and report.calibration_left_out == 0
    contents = [content_key(p) for p in calibration_images.iterdir()]
    assert report.calibration_key == calibration_key(contents, "center-crop/bicubic")


def test_predict_int8_says_how_the_runtime_measured_in_its_summary(
        int8_ready, top_weights, samples, vnni_cpu):
    result = predict(samples / "chelsea.jpg", "--weights", top_weights, "--precision", "int8",
                     "--format", "jsonl")
    assert result.exit_code == 0, result.output
    assert "int8 runtime calibrated on 8 images; a few hundred are recommended" in result.stderr
    assert "against fp32 on 8 other images: top-1 agreement" in result.stderr
    assert SLOW_CPU not in result.stderr


def test_a_head_classifies_int8_features_into_its_classes(int8_ready, top_weights, samples,
                                                          tmp_path, vnni_cpu):
    from pictures import random_head

    head = random_head(tmp_path / "h.head", top_weights, ("cat", "coffee", "rocket"))
    result = predict(samples / "chelsea.jpg", "--weights", top_weights, "--precision", "int8",
                     "--head", head, "--format", "jsonl", "-k", "2")
    assert result.exit_code == 0, result.output
    (record,) = [json.loads(line) for line in result.stdout.splitlines()]
    labels = [p["label"] for p in record["predictions"]]
    assert len(labels) == 2 and set(labels) < {"cat", "coffee", "rocket"}
    assert "int8 runtime calibrated on 8 images" in result.stderr


def test_fp32_stays_the_default_and_says_nothing_of_int8(runtime_ready, top_weights, samples):
    result = predict(samples / "chelsea.jpg", "--weights", top_weights, "--format", "jsonl")
    assert result.exit_code == 0
    assert "int8" not in result.stderr


def test_irv2_precision_chooses_int8_for_embed_too(int8_ready, top_weights, samples,
                                                   tmp_path, monkeypatch, vnni_cpu):
    monkeypatch.setenv("IRV2_PRECISION", "int8")
    out = tmp_path / "features.npy"
    result = CliRunner().invoke(cli, ["embed", str(samples / "chelsea.jpg"), "--weights",
                                      str(top_weights), "-o", str(out)],
                                catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert np.load(out).shape == (1, 1536)
    assert "int8 runtime calibrated on 8 images" in result.stderr


# --- without one, or with a damaged one -----------------------------------------------------

@pytest.mark.parametrize("command", ["predict", "embed"])
def test_int8_without_an_artifact_fails_with_how_to_build_one(top_weights, samples, tmp_path,
                                                              command):
    args = [command, str(samples / "chelsea.jpg"), "--weights", str(top_weights),
            "--precision", "int8", "-o", str(tmp_path / "out.jsonl")]
    result = CliRunner().invoke(cli, args, catch_exceptions=False)
    assert result.exit_code == 1
    message = result.stderr.strip().splitlines()[-1]
    assert message.startswith("Error: there is no int8 runtime for these weights")
    assert message.endswith("run `irv2 quantize --calibrate DIR` on a folder of a few hundred "
                            "of your own photos to build it.")
    assert not (tmp_path / "out.jsonl").exists()


def test_load_engine_refuses_int8_on_keras_and_unknown_precisions(tmp_path):
    with pytest.raises(ValueError, match="fp32 only"):
        load_engine(tmp_path / "w.h5", "keras", precision="int8")
    with pytest.raises(ValueError, match="precision must be one of"):
        load_engine(tmp_path / "w.h5", "onnx", precision="int4")


def test_the_keras_backend_refuses_int8(tmp_path):
    weights = tmp_path / "w.h5"
    weights.write_bytes(b"never read")
    result = predict("photo.jpg", "--weights", weights, "--backend", "keras",
                     "--precision", "int8")
    assert result.exit_code == 2
    assert "--precision int8 runs on the onnx backend" in result.stderr


def overwrite_middle(path: Path) -> None:
    with open(path, "r+b") as f:
        f.seek(path.stat().st_size // 2)
        f.write(b"\0" * 64)


DAMAGE = {
    "overwritten": (overwrite_middle, "does not match its checksum: it is damaged"),
    "truncated": (truncate, "does not match its checksum: it is damaged"),
    "a folder": (replace_with_folder, "is not a regular file"),
    "weights overwritten": (lambda t: overwrite_middle(data_path(t)),
                            "does not match its checksum: it is damaged"),
    "weights missing": (lambda t: data_path(t).unlink(), "has lost its weights"),
    "no checksum": (lambda t: checksum_path(t).unlink(), "has no checksum"),
    "report garbled": (lambda t: report_path(t).write_text("{not json"), "no readable report"),
    "report missing": (lambda t: report_path(t).unlink(), "no readable report"),
}


@pytest.mark.parametrize("kind", DAMAGE)
def test_a_damaged_int8_artifact_is_refused_then_rebuilt_by_quantize(
        int8_ready, top_weights, samples, calibration_images, int8_builds, vnni_cpu, kind):
    damage, reason = DAMAGE[kind]
    target = int8_artifact_path(top_weights)
    damage(target)
    result = predict(samples / "chelsea.jpg", "--weights", top_weights, "--precision", "int8")
    assert result.exit_code == 1
    assert reason in result.stderr and "`irv2 quantize --calibrate DIR`" in result.stderr
    assert "Traceback" not in result.stderr

    notes = []
    done = quantize(calibration_images, weights=top_weights, notify=notes.append)
    assert done.built and int8_builds == [8]
    assert any(reason in note and note.endswith("rebuilding it") for note in notes)
    assert checksum_path(target).read_text().split() == checksums(target)
    assert predict(samples / "chelsea.jpg", "--weights", top_weights,
                   "--precision", "int8").exit_code == 0


# --- the cache: keyed by the calibration set --------------------------------------------------

def test_the_same_calibration_set_finds_it_built_and_another_builds_it_anew(
        int8_ready, top_weights, calibration_images, check_images, tmp_path, int8_builds):
    first = read_report(int8_artifact_path(top_weights))
    renamed = shutil.copytree(calibration_images, tmp_path / "renamed")
    for path in renamed.iterdir():
        path.rename(path.with_name(f"0-{path.name}"))

    again = quantize(renamed, weights=top_weights)  # the same contents, other names
    assert not again.built and int8_builds == [] and again.report == first

    other = quantize(check_images, weights=top_weights)
    assert other.built and int8_builds == [8]
    assert other.report.calibration_key != first.calibration_key
    assert other.report.check is None  # built without a check

    shutil.copy(check_images / "chelsea-flip.jpg", renamed / "extra.jpg")
    assert quantize(renamed, weights=top_weights).built and int8_builds == [8, 9]


def test_the_cli_says_how_many_images_it_used_and_that_it_did_not_check(
        int8_ready, top_weights, calibration_images, tmp_path, int8_builds):
    folder = shutil.copytree(calibration_images, tmp_path / "photos")
    (folder / "notes.jpg").write_text("not a photo")
    result = quantize_command("--calibrate", folder, "--weights", top_weights)
    assert result.exit_code == 0, result.output
    assert int8_builds == [8]
    assert result.stdout.splitlines()[1:] == [
        "int8 runtime calibrated on 8 images (1 file left out: not decodable); a few hundred "
        "are recommended",
        "not checked against fp32: `irv2 quantize --calibrate DIR --check DIR` measures it on "
        "your own photos"]
    assert "left out: " in result.stderr and "notes.jpg" in result.stderr


def test_check_images_that_are_calibration_images_are_left_out_of_the_check(
        int8_runtime, top_weights, calibration_images, check_images, tmp_path, cache):
    shutil.copytree(int8_runtime, cache.irv2 / "runtime")
    mixed = shutil.copytree(check_images, tmp_path / "mixed")
    shutil.copy(calibration_images / "coffee-mirror.jpg", mixed / "also-calibration.jpg")
    done = quantize(calibration_images, mixed, top_weights)
    assert not done.built and done.check_overlap == 1
    assert done.report == read_report(int8_runtime / int8_artifact_path(top_weights).name)


# --- calibration folders that cannot calibrate ------------------------------------------------

def test_an_empty_calibration_folder_is_refused_in_one_line(tmp_path):
    (tmp_path / "empty").mkdir()
    weights = tmp_path / "w.h5"
    weights.write_bytes(b"never read")
    result = quantize_command("--calibrate", tmp_path / "empty", "--weights", weights)
    assert result.exit_code == 1
    assert result.stderr == f"Error: {tmp_path / 'empty'} holds no files\n"


@pytest.mark.slow  # starts decoding workers
def test_a_calibration_folder_of_broken_files_is_refused_in_one_line(tmp_path):
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "a.jpg").write_bytes(b"\xff\xd8\xff truncated")
    (broken / "b.png").write_text("not a png")
    weights = tmp_path / "w.h5"
    weights.write_bytes(b"never read")
    result = quantize_command("--calibrate", broken, "--weights", weights)
    assert result.exit_code == 1
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("Error: none of the 2 files to calibrate on could be decoded as an "
                           "image (the first: ")
    assert not int8_artifact_path(weights).exists()


@pytest.mark.slow  # starts decoding workers
def test_a_check_folder_holding_only_calibration_images_is_refused(
        tmp_path, calibration_images):
    weights = tmp_path / "w.h5"
    weights.write_bytes(b"never read")
    with pytest.raises(CalibrationError, match="every file to check on is also a calibration"):
        quantize(calibration_images, calibration_images, weights)


# --- on a Ray cluster ------------------------------------------------------------------------

def test_a_nodes_inference_stage_in_int8_runs_its_int8_runtime(int8_ready, top_weights,
                                                               vnni_cpu):
    from irv2cli.cluster.stages import Infer

    stage = Infer(RunOptions(weights=top_weights, precision="int8"))
    assert isinstance(stage.classifier.engine, Int8Engine)
    assert stage.classifier.engine.report == read_report(int8_artifact_path(top_weights))


def test_a_node_without_an_int8_runtime_fails_the_stage_with_how_to_build_one(top_weights):
    from irv2cli.cluster.stages import Infer

    stage = Infer(RunOptions(weights=top_weights, precision="int8"))
    with pytest.raises(EngineError, match="there is no int8 runtime") as failed:
        stage({"path": [], "error": [], "warnings": [], "pixels": None})  # its first batch
    assert failed.value.hint is Hint.QUANTIZE


# --- the CPU ----------------------------------------------------------------------------------

@pytest.mark.parametrize(("flags", "slow"), [
    ("fpu sse2 avx2 fma", True),
    ("fpu avx2 avx512f avx512_vnni", False),
    ("fpu avx2 avx_vnni", False),
    ("fpu avx512f amx_tile amx_int8", False),
])
def test_int8_is_said_to_be_slow_only_on_x86_cpus_without_vnni_or_amx(tmp_path, monkeypatch,
                                                                      flags, slow):
    monkeypatch.setenv(CPUINFO_VARIABLE, str(cpuinfo(tmp_path, flags)))
    assert int8_unlikely_faster() is slow


def test_a_cpu_whose_flags_cannot_be_read_is_not_called_slow(tmp_path, monkeypatch):
    monkeypatch.setenv(CPUINFO_VARIABLE, str(tmp_path / "missing"))
    assert int8_unlikely_faster() is False
    arm = tmp_path / "arm"
    arm.write_text("processor\t: 0\nFeatures\t: fp asimd asimddp\n")  # ARM names no flags
    monkeypatch.setenv(CPUINFO_VARIABLE, str(arm))
    assert int8_unlikely_faster() is False


def test_predict_int8_on_a_cpu_without_vnni_says_so_once(int8_ready, top_weights, photos,
                                                         tmp_path, monkeypatch):
    monkeypatch.setenv(CPUINFO_VARIABLE, str(cpuinfo(tmp_path, "fpu sse2 avx2 fma")))
    result = predict(photos, "--weights", top_weights, "--precision", "int8",
                     "--batch-size", "1", "--format", "jsonl")
    assert result.exit_code == 0
    assert result.stderr.count(SLOW_CPU) == 1
    assert len(result.stdout.splitlines()) == len(list(photos.iterdir()))


def test_quantize_on_a_cpu_without_vnni_says_so(int8_ready, top_weights, calibration_images,
                                                tmp_path, monkeypatch):
    monkeypatch.setenv(CPUINFO_VARIABLE, str(cpuinfo(tmp_path, "fpu sse2 avx2 fma")))
    notes = []
    assert not quantize(calibration_images, weights=top_weights, notify=notes.append).built
    assert notes == [SLOW_CPU]
