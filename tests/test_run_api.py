"""The library run API: a folder run from Python alone, with no click and no console."""

from __future__ import annotations

import csv
import shutil

import numpy as np
import pytest

import irv2cli
from irv2cli import RunInterrupted, RunOptions, run
from irv2cli.errors import Hint, OutputError
from irv2cli.spec import FEATURES, PROBABILITIES

pytestmark = pytest.mark.in_memory_engine  # the subject is not the network


def csv_paths(path) -> list[str]:
    with open(path, newline="") as f:
        return [row["path"] for row in csv.DictReader(f)]


def test_a_folder_run_writes_every_input_once_and_resumes(weights, mixed_folder, samples, tmp_path):
    output = tmp_path / "labels.csv"
    first = run([mixed_folder], output, RunOptions(weights=weights, top_k=3))
    assert (first.classified, first.failed, first.skipped) == (2, 1, 0)
    assert first.output == output and first.any_failed and first.elapsed > 0

    shutil.copy(samples / "rocket.jpg", mixed_folder / "rocket.jpg")
    second = run([mixed_folder], output, RunOptions(weights=weights, top_k=3, resume=True))
    assert (second.classified, second.failed, second.skipped, second.failed_before) == (
        1, 0, 3, 1)
    rows = csv_paths(output)
    assert sorted(set(rows)) == sorted(str(p) for p in mixed_folder.iterdir())
    assert rows.count(str(mixed_folder / "rocket.jpg")) == 3  # top-3, written once


def test_callbacks_hear_every_record_and_the_progress(weights, mixed_folder):
    records, progress = [], []
    summary = run([mixed_folder], None, RunOptions(weights=weights), on_record=records.append,
                  on_progress=progress.append)
    assert [r.path for r in records] == sorted(str(p) for p in mixed_folder.iterdir())
    assert [r.error is None for r in records] == [True, True, False]
    assert [(p.done, p.failed, p.total) for p in progress] == [(1, 0, 3), (2, 0, 3), (3, 1, 3)]
    assert (summary.classified, summary.failed, summary.output) == (2, 1, None)


def test_records_carry_the_outputs_asked_for(weights, mixed_folder):
    records = []
    run([mixed_folder / "chelsea.jpg"], None, RunOptions(weights=weights,
                                                   outputs=(PROBABILITIES, FEATURES)),
        on_record=records.append)
    (record,) = records
    assert len(record.predictions) == 5
    assert record.features.shape == (1536,) and record.features.dtype == np.float32


def test_an_interrupted_run_closes_its_output_and_says_what_it_wrote(weights, mixed_folder,
                                                                     tmp_path):
    output = tmp_path / "labels.jsonl"

    def interrupt_after_two(record):
        if record.path.endswith("coffee.jpg"):
            raise KeyboardInterrupt

    with pytest.raises(RunInterrupted) as caught:
        run([mixed_folder], output, RunOptions(weights=weights), on_record=interrupt_after_two)
    summary = caught.value.summary
    assert (summary.classified, summary.failed, summary.output) == (2, 0, output)
    assert isinstance(caught.value.__cause__, KeyboardInterrupt)
    resumed = run([mixed_folder], output, RunOptions(weights=weights, resume=True))
    assert (resumed.classified, resumed.failed, resumed.skipped) == (0, 1, 2)


def test_an_existing_output_is_refused_in_the_library_s_own_words(weights, mixed_folder, tmp_path):
    output = tmp_path / "labels.csv"
    output.write_text("keep me\n")
    with pytest.raises(OutputError) as caught:
        run([mixed_folder], output, RunOptions(weights=weights))
    assert caught.value.hint is Hint.RESUME_OR_OVERWRITE
    assert "--" not in str(caught.value) and "resume=True" in str(caught.value)
    assert output.read_text() == "keep me\n"


def test_the_package_exports_what_a_python_user_needs():
    for name in irv2cli.__all__:
        assert getattr(irv2cli, name) is not None
    assert {"Classifier", "run", "RunOptions", "RunSummary", "Irv2Error", "export_model",
            "ensure_weights", "install_from_file"} <= set(irv2cli.__all__)
