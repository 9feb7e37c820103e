"""The fast runtime: ONNX Runtime on a cached artifact agrees with Keras and never goes stale."""

from __future__ import annotations

import itertools
import os
import shutil
import subprocess
import sys
import threading

import numpy as np
import pytest

from irv2cli.engines.keras_engine import KerasEngine
from irv2cli.engines.onnx_runtime import OnnxEngine, load_onnx_engine
from irv2cli.inputs.images import load_input
from irv2cli.spec import PROBABILITIES
from irv2cli.store import artifacts
from irv2cli.store.artifacts import artifact_path, checksum_path, data_path


@pytest.fixture(scope="session")
def onnx_artifact(top_weights, built_runtime):
    """The optimised artifact for the session's generated weights, built once (the
    session's, never damaged by a test)."""
    return built_runtime / artifact_path(top_weights).name


@pytest.fixture(scope="module")
def images(samples) -> np.ndarray:
    photos = [load_input(samples / name) for name in
              ("chelsea.jpg", "coffee.jpg", "rocket.jpg", "astronaut.jpg")]
    noise = np.random.default_rng(3).uniform(-1, 1, (299, 299, 3)).astype("float32")
    return np.stack([*photos, noise])


def log_softmax(logits: np.ndarray) -> np.ndarray:
    shifted = logits - logits.max(axis=-1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=-1, keepdims=True))


@pytest.mark.slow
@pytest.mark.parametrize("batches", [[1], [5], [3, 2]], ids=["single", "batch", "short-last"])
def test_onnx_agrees_with_keras(onnx_artifact, reference_model, images, batches):
    engine = OnnxEngine(onnx_artifact)
    starts = np.cumsum([0, *batches])
    probabilities = np.concatenate(
        [engine(images[a:b])[PROBABILITIES] for a, b in itertools.pairwise(starts)])
    expected = log_softmax(reference_model(images[: starts[-1]]).numpy())
    # log-probabilities are the logits up to a per-image constant
    assert np.abs(np.log(probabilities) - expected).max() < 1e-4
    for got, want in zip(probabilities, expected, strict=True):
        assert np.argsort(-got)[:5].tolist() == np.argsort(-want)[:5].tolist()


@pytest.mark.slow
def test_keras_engine_traces_once_for_every_batch_size(top_weights, images):
    engine = KerasEngine(top_weights)
    for size in (3, 2, 1):
        engine(images[:size])
    assert engine._forward.experimental_get_tracing_count() == 1


def test_artifact_key_changes_with_the_weights(top_weights, tmp_path):
    other = tmp_path / "other.h5"
    other.write_bytes(top_weights.read_bytes()[:-1] + b"\0")
    assert artifact_path(other) != artifact_path(top_weights)
    assert artifact_path(top_weights) == artifact_path(shutil.copy(top_weights, tmp_path))


def test_artifact_key_includes_version_format_and_machine(top_weights, monkeypatch):
    before = artifact_path(top_weights)
    monkeypatch.setattr(artifacts, "__version__", "99.0")
    assert artifact_path(top_weights) != before
    monkeypatch.setattr(artifacts, "machine_fingerprint", lambda: "another-cpu")
    assert "another-cpu" in artifact_path(top_weights).name


def test_an_artifact_of_an_earlier_format_is_never_taken_for_this_one(top_weights,
                                                                      monkeypatch):
    current = artifact_path(top_weights)
    monkeypatch.setattr(artifacts, "ARTIFACT_FORMAT", 1)  # probabilities alone
    assert artifact_path(top_weights) != current


@pytest.mark.slow
def test_damaged_artifact_is_rebuilt(runtime_ready, top_weights, images, onnx_artifact):
    installed = artifact_path(top_weights)
    installed.write_bytes(installed.read_bytes()[:100_000])
    messages = []
    engine = load_onnx_engine(top_weights, messages.append)
    assert any("damaged" in m for m in messages)
    rebuilt, built = engine(images[:1]), OnnxEngine(onnx_artifact)(images[:1])
    assert rebuilt.keys() == built.keys()
    assert all(np.allclose(rebuilt[name], built[name], atol=1e-6) for name in built)
    assert data_path(installed).stat().st_size > 200_000_000  # rebuilt whole


def test_concurrent_first_uses_build_the_artifact_once(top_weights, builds, images):
    engines = [None, None]

    def use(slot):
        engines[slot] = load_onnx_engine(top_weights)

    threads = [threading.Thread(target=use, args=(i,)) for i in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(builds) == 1
    assert np.allclose(engines[0](images[:1])[PROBABILITIES],
                       engines[1](images[:1])[PROBABILITIES])
    target = artifact_path(top_weights)
    assert sorted(p.name for p in target.parent.iterdir() if not p.name.endswith(".lock")) == [
        target.name, data_path(target).name, checksum_path(target).name]


@pytest.mark.slow
def test_predict_on_the_artifact_never_imports_tensorflow(runtime_ready, top_weights, samples):
    code = ("import sys, json; from click.testing import CliRunner; "
            "from irv2cli.cli.main import cli; "
            f"r = CliRunner().invoke(cli, ['predict', {str(samples / 'coffee.jpg')!r}, "
            f"'--weights', {str(top_weights)!r}, '--format', 'json']); "
            "assert r.exit_code == 0, r.output; "
            "assert json.loads(r.stdout)[0]['predictions']; "
            "print(sorted({m.split('.')[0] for m in sys.modules} & {'tensorflow', 'keras'}))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         env=os.environ.copy(), check=True).stdout
    assert out.strip() == "[]"
