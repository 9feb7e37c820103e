"""``irv2 train`` on the network's own features (the session's generated weights): the
head it writes classifies visibly different pictures well, is exactly scikit-learn's fit
of the same feature matrix, and the exported graph with the head fused gives the same
scores as ``predict --head``."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from pictures import LOOKS, split_folders

from irv2cli.cli.main import cli
from irv2cli.results.feature_npy import sidecar_path
from irv2cli.results.heads import load_head


def irv2(*args):
    return CliRunner().invoke(cli, [str(arg) for arg in args], catch_exceptions=False)


@pytest.fixture(scope="module")
def trained(top_weights, built_runtime, session_homes, tmp_path_factory) -> tuple[Path, Path]:
    """(the data: train/ and val/ of 3 classes, 4 + 2 pictures each; the head trained on
    them once for the module, in the session's home for the weights, where their runtime
    is built)."""
    from conftest import irv2_home

    data = split_folders(tmp_path_factory.mktemp("shapes") / "data")
    head = data.parent / "shapes.head"
    with irv2_home(session_homes(top_weights)):
        result = irv2("train", data, "-o", head, "--weights", top_weights)
    assert result.exit_code == 0, result.output
    assert "validation (6 images): top-1 100.0%" in result.output
    return data, head


def scores_of(results: Path) -> dict[str, dict[str, float]]:
    records = [json.loads(line) for line in results.read_text().splitlines()]
    return {Path(r["path"]).name + Path(r["path"]).parent.name:
            {p["label"]: p["score"] for p in r["predictions"]} for r in records}


def test_the_head_is_scikit_learns_fit_of_the_same_features(weights, trained, tmp_path):
    from irv2cli.training.fit import model

    data, head = trained
    train_features = tmp_path / "train.npy"
    assert irv2("embed", data / "train", "-o", train_features, "--weights", weights,
                "-q").exit_code == 0
    paths = [json.loads(line)["path"] for line in
             sidecar_path(train_features).read_text().splitlines()]
    classes = load_head(head).classes
    labels = [classes.index(Path(path).parent.name) for path in paths]
    fitted = model(load_head(head).metadata["training"]["C"], balance=True).fit(
        np.load(train_features), labels)

    results = tmp_path / "val.jsonl"
    assert irv2("predict", data / "val", "--head", head, "--weights", weights, "-o",
                results, "-q").exit_code == 0
    val_features = tmp_path / "val.npy"
    assert irv2("embed", data / "val", "-o", val_features, "--weights", weights,
                "-q").exit_code == 0
    expected = fitted.predict_proba(np.load(val_features))
    val_paths = [json.loads(line)["path"] for line in
                 sidecar_path(val_features).read_text().splitlines()]
    got = scores_of(results)
    for path, row in zip(val_paths, expected, strict=True):
        scores = got[Path(path).name + Path(path).parent.name]
        assert max(scores, key=scores.get) == classes[int(row.argmax())] == Path(path).parent.name
        np.testing.assert_allclose([scores[name] for name in classes], row, atol=1e-5)


def test_the_exported_graph_with_the_head_scores_as_predict_does(weights, trained, tmp_path):
    import onnxruntime

    from irv2cli.inputs.images import load_input

    data, head = trained
    exported = tmp_path / "shapes.onnx"
    result = irv2("export", "--format", "onnx", "--head", head, "--weights", weights,
                  "-o", exported)
    assert result.exit_code == 0, result.output
    contract = json.loads(Path(f"{exported}.preprocessing.json").read_text())
    assert contract["output"]["classes"] == sorted(LOOKS)
    results = tmp_path / "val.jsonl"
    assert irv2("predict", data / "val", "--head", head, "--weights", weights, "-o", results,
                "-q").exit_code == 0
    got = scores_of(results)
    session = onnxruntime.InferenceSession(str(exported))
    files = sorted((data / "val").rglob("*.png"))
    batch = np.stack([load_input(path) for path in files])
    (probabilities,) = session.run(None, {contract["input"]["name"]: batch})
    for path, row in zip(files, probabilities, strict=True):
        scores = got[path.name + path.parent.name]
        assert contract["output"]["classes"][int(row.argmax())] == max(scores, key=scores.get)
        np.testing.assert_allclose([scores[name] for name in contract["output"]["classes"]],
                                   row, atol=1e-5)
