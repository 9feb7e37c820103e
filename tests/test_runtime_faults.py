"""The fast runtime under faults: a damaged artifact never gives answers, a killed build
leaves nothing behind for long, a bad weights file is refused before the build proper,
and an engine that returns NaN stops the run instead of writing it.

Rebuilds here copy the session's artifact instead of running the half-minute build
(``builds``); the real build, and stopping it, are tested in ``test_signals.py``.
"""

from __future__ import annotations

import csv
import io
import itertools
import json
import os
import shutil
from collections.abc import Callable
from pathlib import Path

import h5py
import numpy as np
import pytest
from filelock import FileLock
from support import predict, replace_with_folder, truncate

from irv2cli.cli.advice import user_message
from irv2cli.engines import base as engines
from irv2cli.engines.onnx_runtime import load_onnx_engine
from irv2cli.errors import Hint, WeightsError
from irv2cli.network.h5weights import expected_layout, read_legacy_layout, weights_include_top
from irv2cli.spec import PROBABILITIES, SPEC
from irv2cli.store.artifacts import artifact_path, checksum_path, checksums, data_path
from irv2cli.store.weights import cached_weights_path


@pytest.fixture
def target(runtime_ready, top_weights) -> Path:
    """This test's own copy of the sound artifact, in place in its cache."""
    return artifact_path(top_weights)


def overwrite_middle(data: bytes) -> Callable[[Path], None]:
    def damage(path: Path) -> None:
        with open(path, "r+b") as f:
            f.seek(path.stat().st_size // 2)
            f.write(data)
    return damage


def replace_with_fifo(path: Path) -> None:
    path.unlink()
    os.mkfifo(path)


def lose_checksum(path: Path) -> None:
    checksum_path(path).unlink()


def in_the_weights(damage: Callable[[Path], None]) -> Callable[[Path], None]:
    """``damage`` done to the artifact's data file (its weights) instead of its graph."""
    return lambda path: damage(data_path(path))


DAMAGES = {
    "64 bytes of 0xFF, same size": overwrite_middle(b"\xff" * 64),
    "truncated": truncate,
    "a folder": replace_with_folder,
    "a FIFO": replace_with_fifo,
    "no checksum (a build cut short)": lose_checksum,
    "weights: 64 bytes of 0xFF, same size": in_the_weights(overwrite_middle(b"\xff" * 64)),
    "weights: 1 KB of constant floats": in_the_weights(
        overwrite_middle(np.full(256, 0.5, np.float32).tobytes())),
    "weights: truncated": in_the_weights(truncate),
    "weights: missing": in_the_weights(Path.unlink),
    "weights: a folder": in_the_weights(replace_with_folder),
}


@pytest.mark.parametrize("damage", DAMAGES.values(), ids=DAMAGES.keys())
def test_a_damaged_artifact_is_rebuilt_before_any_answer(target, top_weights, builds,
                                                         good_artifact, damage):
    damage(target)
    messages = []
    engine = load_onnx_engine(top_weights, messages.append)
    assert builds == [top_weights]
    assert any(str(target) in m and "rebuilding it" in m for m in messages), messages
    assert checksums(target) == checksums(good_artifact)
    outputs = engine(np.zeros((1, 299, 299, 3), np.float32))
    assert all(np.isfinite(values).all() for values in outputs.values())


def test_a_sound_artifact_is_loaded_without_a_word_or_a_build(target, top_weights, builds):
    messages = []
    load_onnx_engine(top_weights, messages.append)
    assert (builds, messages) == ([], [])
    assert checksum_path(target).read_text().split() == checksums(target)


def test_predict_rebuilds_an_artifact_replaced_by_a_folder(target, top_weights, builds,
                                                          samples):
    replace_with_folder(target)
    result = predict(samples / "coffee.jpg", "--weights", top_weights, "--format", "json")
    assert result.exit_code == 0, result.output
    assert "is not a regular file; rebuilding it" in result.stderr
    assert "Traceback" not in result.output
    assert json.loads(result.stdout)[0]["predictions"]
    assert target.is_file()


def test_a_build_cut_short_before_its_checksum_is_never_trusted(cache, top_weights, builds,
                                                                monkeypatch):
    renames = []
    real_replace = os.replace

    def crash_on_the_checksum(source, destination):
        if str(destination).endswith(".xxh3"):
            raise SystemExit("power cut")
        renames.append(destination)
        real_replace(source, destination)

    monkeypatch.setattr(os, "replace", crash_on_the_checksum)
    with pytest.raises(SystemExit):
        load_onnx_engine(top_weights)
    monkeypatch.setattr(os, "replace", real_replace)
    target = artifact_path(top_weights)
    assert renames == [data_path(target), target] and not checksum_path(target).exists()
    messages = []
    load_onnx_engine(top_weights, messages.append)
    assert len(builds) == 2
    assert any("has no checksum" in m for m in messages)


def scratch_folder(target: Path, owner: str | None = None) -> Path:
    """A killed build's scratch folder, with a partial file in it."""
    folder = target.parent / f".build-{owner or target.name}-k1lled"
    folder.mkdir(parents=True)
    (folder / "optimized.onnx").write_bytes(b"\0" * 1_000_000)
    return folder


def test_a_killed_builds_leftovers_are_removed_on_the_next_run(target, top_weights):
    leftover = scratch_folder(target)
    other_artifacts = scratch_folder(target, owner="irv2-another-artifact.onnx")
    load_onnx_engine(top_weights)
    assert not leftover.exists()
    assert other_artifacts.exists()  # its builder may be alive: only its own run cleans it


def test_a_live_builders_folder_is_left_alone(target, top_weights):
    in_use = scratch_folder(target)
    with FileLock(f"{target}.lock"):  # held as a live builder holds it
        load_onnx_engine(top_weights)
    assert in_use.exists()


def test_a_build_removes_every_leftover_of_earlier_builds(cache, top_weights, builds):
    target = artifact_path(top_weights)
    leftover = scratch_folder(target)
    load_onnx_engine(top_weights)
    assert sorted(p.name for p in target.parent.iterdir()) == sorted(
        [target.name, data_path(target).name, checksum_path(target).name,
         f"{target.name}.lock"])
    assert not leftover.exists()


def empty_hdf5(path: Path) -> Path:
    with h5py.File(path, "w"):
        pass
    return path


def text_file(path: Path) -> Path:
    path.write_text("these are not weights\n")
    return path


def missing_its_last_layer(path: Path, notop_weights: Path) -> Path:
    """The notop file without its last weighted layer: it fits neither layout."""
    shutil.copy(notop_weights, path)
    with h5py.File(path, "r+") as f:
        names = list(f.attrs["layer_names"])
        weighted = [name for name in names if len(f[name].attrs["weight_names"])]
        names.remove(weighted[-1])
        f.attrs["layer_names"] = names
    return path


@pytest.mark.slow  # the real build child refuses it
@pytest.mark.parametrize("bad", ["not HDF5", "HDF5 without layers", "a layer missing"])
def test_a_bad_weights_file_is_refused_before_the_build_and_writes_nothing(
        bad, cache, tmp_path, notop_weights, samples):
    weights = {"not HDF5": lambda: text_file(tmp_path / "bad.h5"),
               "HDF5 without layers": lambda: empty_hdf5(tmp_path / "empty.h5"),
               "a layer missing": lambda: missing_its_last_layer(tmp_path / "short.h5",
                                                                 notop_weights)}[bad]()
    out = tmp_path / "out.json"
    result = predict(samples / "coffee.jpg", "--weights", weights, "--output", out)
    assert result.exit_code == 1
    assert str(weights) in result.stderr
    assert "building" not in result.stderr
    assert "download-weights" not in result.stderr  # advice for the official file only
    assert "Traceback" not in result.output
    assert not out.exists()
    lock = f"{artifact_path(weights).name}.lock"
    assert [p.name for p in (cache.irv2 / "runtime").iterdir()] == [lock]


def test_a_damaged_official_file_is_refused_with_the_advice_to_fetch_it_again(cache):
    official = cached_weights_path(SPEC.top_weights)
    official.parent.mkdir(parents=True)
    text_file(official)
    with pytest.raises(WeightsError) as caught:
        weights_include_top(official)
    assert caught.value.hint is Hint.REFETCH_WEIGHTS
    assert "irv2 download-weights --force" in user_message(caught.value)


def test_the_layout_data_is_the_official_files_layout(top_weights, notop_weights):
    """``data/weights_layout.json`` against files written by keras.applications itself."""
    def shapes(layout):
        return [s for _, s in layout]

    assert shapes(read_legacy_layout(top_weights)) == shapes(expected_layout(True))
    assert shapes(read_legacy_layout(notop_weights)) == shapes(expected_layout(False))


@pytest.fixture
def nan_after_first_batch(top_weights, cached_engines, monkeypatch):
    """Engines that answer the first batch, then return NaN (a broken runtime)."""
    loaded = engines.load_engine

    class Broken:
        def __init__(self, engine):
            self.engine, self.outputs, self.calls = engine, engine.outputs, itertools.count()

        def __call__(self, batch):
            if next(self.calls) == 0:
                return self.engine(batch)
            return {PROBABILITIES: np.full((len(batch), 1000), np.nan, np.float32)}

    def broken(weights, backend="auto", notify=lambda message: None, precision="fp32"):
        return Broken(loaded(weights, backend, notify, precision))

    monkeypatch.setattr(engines, "load_engine", broken)
    return top_weights


@pytest.mark.parametrize("suffix", ["json", "jsonl", "csv"])
def test_an_engine_that_returns_nan_stops_the_run_and_keeps_what_was_written(
        nan_after_first_batch, photos, tmp_path, suffix):
    out = tmp_path / f"out.{suffix}"
    result = predict(photos, "--weights", nan_after_first_batch, "--output", out,
                     "--batch-size", "1")
    assert result.exit_code == 1
    assert "NaN or infinite scores" in result.stderr and "Traceback" not in result.output
    paths, scores = written(out)
    assert len(paths) == 1 and scores and np.isfinite(scores).all()


def written(out: Path) -> tuple[set[str], list[float]]:
    """The paths and scores in a results file (a .json file must be a closed array)."""
    text = out.read_text()
    if out.suffix == ".csv":
        rows = list(csv.DictReader(io.StringIO(text)))
        return {r["path"] for r in rows}, [float(r["score"]) for r in rows]
    records = (json.loads(text) if out.suffix == ".json"
               else [json.loads(line) for line in text.splitlines()])
    return ({r["path"] for r in records},
            [p["score"] for r in records for p in r["predictions"]])
