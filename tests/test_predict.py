"""`irv2 predict` on files: tables and records, options, and per-file errors."""

from __future__ import annotations

import csv
import io
import json
import subprocess
import sys

import numpy as np
import pytest
from support import predict

from irv2cli.inputs.images import load_input
from irv2cli.results.labels import imagenet_labels


def softmax(logits: np.ndarray) -> np.ndarray:
    e = np.exp(logits - logits.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def test_table_shows_rank_label_wnid_and_probability(weights, samples):
    result = predict(samples / "chelsea.jpg", "--weights", weights, "-k", "3")
    assert result.exit_code == 0, result.output
    assert "chelsea.jpg" in result.stdout
    for header in ("#", "label", "WordNet ID", "probability"):
        assert header in result.stdout
    rows = [line for line in result.stdout.splitlines() if "│ 3 │" in line]
    assert len(rows) == 1 and "%" in rows[0]


def test_json_records_match_the_reference_keras_model(weights, samples, reference_model):
    paths = [samples / "chelsea.jpg", samples / "coffee.jpg"]
    result = predict(*paths, "--weights", weights, "--format", "json", "-k", "5")
    assert result.exit_code == 0
    records = json.loads(result.stdout)
    assert [r["path"] for r in records] == [str(p) for p in paths]
    expected = softmax(reference_model(np.stack([load_input(p) for p in paths])).numpy())
    labels = imagenet_labels()
    for record, probabilities in zip(records, expected, strict=True):
        assert record["error"] is None
        best = np.argsort(-probabilities)[:5]
        assert [p["index"] for p in record["predictions"]] == best.tolist()
        assert [p["rank"] for p in record["predictions"]] == [1, 2, 3, 4, 5]
        for p in record["predictions"]:
            assert (p["wnid"], p["label"]) == (labels[p["index"]].wnid, labels[p["index"]].label)
            assert p["score"] == pytest.approx(probabilities[p["index"]], abs=1e-5)
            assert 0.0 <= p["score"] <= 1.0


def test_squash_nearest_classifies_exactly_what_keras_load_img_gives(weights, samples,
                                                                    reference_model):
    import keras

    path = samples / "rocket.jpg"
    result = predict(path, "--weights", weights, "--format", "jsonl", "-k", "1",
                     "--resize", "squash", "--interpolation", "nearest")
    image = keras.utils.img_to_array(keras.utils.load_img(path, target_size=(299, 299)))
    x = keras.applications.inception_resnet_v2.preprocess_input(image[None])
    probabilities = softmax(reference_model(x).numpy())[0]
    top = json.loads(result.stdout)["predictions"][0]
    assert top["index"] == int(probabilities.argmax())
    assert top["score"] == pytest.approx(float(probabilities.max()), abs=1e-5)


def test_jsonl_is_one_record_per_line_and_csv_one_row_per_rank(weights, samples):
    paths = [samples / "chelsea.jpg", samples / "rocket.jpg"]
    lines = predict(*paths, "--weights", weights, "--format", "jsonl", "-k", "2").stdout
    assert [json.loads(line)["path"] for line in lines.splitlines()] == list(map(str, paths))
    rows = list(csv.DictReader(io.StringIO(
        predict(*paths, "--weights", weights, "--format", "csv", "-k", "2").stdout)))
    assert [(r["path"], r["rank"]) for r in rows] == [
        (str(paths[0]), "1"), (str(paths[0]), "2"), (str(paths[1]), "1"), (str(paths[1]), "2")]
    assert all(0.0 <= float(r["score"]) <= 1.0 and r["error"] == "" for r in rows)


@pytest.mark.parametrize("k", [1, 1000])
def test_top_k_bounds_are_accepted(weights, samples, k):
    result = predict(samples / "coffee.jpg", "--weights", weights, "--format", "json",
                     "-k", k)
    predictions = json.loads(result.stdout)[0]["predictions"]
    assert len(predictions) == k
    if k == 1000:
        assert sum(p["score"] for p in predictions) == pytest.approx(1.0, abs=1e-4)


@pytest.mark.parametrize("args", [["-k", "0"], ["-k", "1001"], ["--resize", "stretch"],
                                  ["--interpolation", "cubic"], ["--format", "xml"],
                                  ["--weights", "missing.h5"], ["--resume"]])
def test_usage_errors_exit_2_without_loading_anything(samples, args):
    result = predict(samples / "coffee.jpg", *args)
    assert result.exit_code == 2
    assert "Traceback" not in result.output


def test_bad_inputs_get_one_line_errors_and_the_rest_is_classified(weights, samples, tmp_path):
    text = tmp_path / "notes.jpg"
    text.write_text("not an image")
    truncated = tmp_path / "truncated.jpg"
    truncated.write_bytes((samples / "rocket.jpg").read_bytes()[:5000])
    missing = tmp_path / "missing.jpg"
    result = predict(text, samples / "chelsea.jpg", truncated, missing, "--weights", weights,
                     "--format", "jsonl")
    assert result.exit_code == 1
    records = [json.loads(line) for line in result.stdout.splitlines()]
    assert [r["path"] for r in records] == [str(text), str(samples / "chelsea.jpg"),
                                            str(truncated), str(missing)]
    assert [r["error"] is None for r in records] == [False, True, False, False]
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 3
    assert all(str(p) in e for p, e in zip([text, truncated, missing], errors, strict=True))
    assert "Traceback" not in result.output


def test_weights_that_do_not_fit_are_a_one_line_error(notop_weights, samples, cached_engines):
    result = predict(samples / "coffee.jpg", "--weights", notop_weights)
    assert result.exit_code == 1
    assert "Error:" in result.stderr and "notop.h5" in result.stderr
    assert "Traceback" not in result.output


def test_official_weights_are_downloaded_on_first_use(top_weights, samples, monkeypatch,
                                                      cache, cached_engines,
                                                      http_directory):
    import dataclasses

    from irv2cli.spec import SPEC, WeightFile
    from irv2cli.store import weights as weights_module
    from irv2cli.store.weights import file_md5

    official = SPEC.top_weights.filename
    (http_directory.root / official).symlink_to(top_weights)
    fake = WeightFile(official, file_md5(top_weights), include_top=True)
    monkeypatch.setattr(weights_module, "SPEC", dataclasses.replace(SPEC, top_weights=fake))
    monkeypatch.setenv("IRV2_MIRROR", http_directory.url)
    result = predict(samples / "coffee.jpg", "--format", "json")
    assert result.exit_code == 0, result.output
    assert (cache.irv2 / "weights" / official).is_file()
    assert json.loads(result.stdout)[0]["predictions"]


HEAVY = ("tensorflow", "keras", "numpy", "PIL", "onnx", "onnxruntime", "openvino", "uvicorn",
         "starlette", "prometheus_client")


@pytest.mark.slow  # starts a process per command
@pytest.mark.parametrize("command", [[], ["predict"], ["download-weights"], ["export"],
                                     ["bench"], ["serve"]])
def test_help_imports_nothing_heavy(command):
    code = ("import sys; from click.testing import CliRunner; from irv2cli.cli.main import cli; "
            f"r = CliRunner().invoke(cli, {[*command, '--help']!r}); "
            "assert r.exit_code == 0 and 'Usage:' in r.output, r.output; "
            f"print(sorted(m for m in sys.modules if m.split('.')[0] in {HEAVY!r}))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout
    assert out.strip() == "[]"


def test_an_interrupted_run_to_stdout_is_not_told_to_resume(weights, samples, monkeypatch):
    """--resume needs --output: a run that printed its results has nothing to resume."""
    from irv2cli.results.writers import JsonLinesWriter

    def interrupt(writer, record):
        raise KeyboardInterrupt

    monkeypatch.setattr(JsonLinesWriter, "write", interrupt)
    result = predict(samples / "chelsea.jpg", "--weights", weights, "--format", "jsonl")
    assert result.exit_code == 130
    assert "Interrupted: 0 results were written." in result.stderr
    assert "--resume" not in result.stderr
