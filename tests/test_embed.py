"""``irv2 embed``: one 1536-d float32 vector per image, beside predict on one artifact."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner

from irv2cli import RunOptions, run
from irv2cli.cli.main import cli
from irv2cli.spec import FEATURES

pytestmark = pytest.mark.slow  # runs the network


def embed(*args):
    return CliRunner().invoke(cli, ["embed", *map(str, args)], catch_exceptions=False)


@pytest.fixture
def expected(weights, mixed_folder) -> dict[str, np.ndarray]:
    """The features the library gives for the photos, by path."""
    records = []
    run([mixed_folder], None, RunOptions(weights=weights, outputs=(FEATURES,)),
        on_record=records.append)
    return {r.path: r.features for r in records if r.error is None}


def test_parquet_holds_one_row_per_input_with_its_features_or_error(weights, mixed_folder,
                                                                   expected, tmp_path):
    output = tmp_path / "features.parquet"
    result = embed(mixed_folder, "--output", output, "--weights", weights)
    assert result.exit_code == 1  # one input is not an image
    assert "2 embedded, 1 failed" in result.stderr
    table = pq.read_table(output).to_pylist()
    assert [row["path"] for row in table] == sorted(str(p) for p in mixed_folder.iterdir())
    for row in table[:2]:
        assert row["error"] is None
        np.testing.assert_array_equal(np.float32(row["features"]), expected[row["path"]])
    assert table[2]["features"] is None and "notes.jpg" in table[2]["error"]


def test_npy_holds_the_decoded_images_rows_and_the_sidecar_their_paths(weights, mixed_folder,
                                                                       expected, tmp_path):
    output = tmp_path / "features.npy"
    assert embed(mixed_folder, "-o", output, "--weights", weights).exit_code == 1
    array = np.load(output)
    assert array.shape == (2, 1536) and array.dtype == np.float32
    lines = [json.loads(line) for line in (tmp_path / "features.paths.jsonl").read_text()
             .splitlines()]
    rows = {line["path"]: line["row"] for line in lines if "row" in line}
    for path, row in rows.items():
        np.testing.assert_array_equal(array[row], expected[path])
    assert [line["path"] for line in lines if "error" in line] == [str(mixed_folder / "notes.jpg")]


def test_jsonl_resumes_where_the_last_run_stopped(weights, mixed_folder, samples, expected,
                                                 tmp_path):
    output = tmp_path / "features.jsonl"
    assert embed(mixed_folder, "-o", output, "--weights", weights).exit_code == 1
    shutil.copy(samples / "rocket.jpg", mixed_folder / "rocket.jpg")
    result = embed(mixed_folder, "-o", output, "--weights", weights, "--resume")
    assert result.exit_code == 1  # the file still holds the earlier error record
    assert "1 embedded, 0 failed" in result.stderr and "3 already in" in result.stderr
    records = [json.loads(line) for line in output.read_text().splitlines()]
    assert [r["path"] for r in records] == [*sorted(expected), str(mixed_folder / "notes.jpg"),
                                            str(mixed_folder / "rocket.jpg")]
    assert len(records[-1]["features"]) == 1536


def test_predict_and_embed_share_one_artifact_per_weights_file(top_weights, mixed_folder,
                                                               runtime_ready, tmp_path):
    """No shared engines here: each command loads its own from the cache, which holds the
    artifact for these weights, so neither builds another."""
    photo = mixed_folder / "chelsea.jpg"
    assert embed(photo, "-o", tmp_path / "f.npy", "--weights", top_weights).exit_code == 0
    result = CliRunner().invoke(cli, ["predict", str(photo), "--weights", str(top_weights)],
                                catch_exceptions=False)
    assert result.exit_code == 0
    assert len(list(runtime_ready.glob("*.onnx"))) == 1


def test_an_output_is_required_and_its_format_must_be_known(weights, mixed_folder, tmp_path):
    assert embed(mixed_folder).exit_code == 2
    result = embed(mixed_folder, "-o", tmp_path / "features.txt", "--weights", weights)
    assert result.exit_code == 1 and "--format" in result.stderr
    assert not (tmp_path / "features.txt").exists()


@pytest.mark.parametrize("name", ["features.npy", "features.parquet", "features.jsonl"])
def test_files_the_output_writes_inside_an_input_folder_are_never_inputs(weights, mixed_folder,
                                                                        name):
    """The npy's sidecar and the parquet's staged file included, hidden files too."""
    output = mixed_folder / name
    result = embed(mixed_folder, "-o", output, "--weights", weights, "--include-hidden")
    assert result.exit_code == 1  # notes.jpg, and nothing else, failed
    assert "2 embedded, 1 failed" in result.stderr
    rerun = embed(mixed_folder, "-o", output, "--weights", weights, "--include-hidden", "--resume")
    assert "0 embedded, 0 failed" in rerun.stderr and "3 already in" in rerun.stderr
