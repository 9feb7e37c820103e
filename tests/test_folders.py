"""Folders: every file gets exactly one record, output files stream and resume after a crash."""

from __future__ import annotations

import csv
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from concurrent.futures import Future
from pathlib import Path

import numpy as np
import pytest
from support import copies, numbered, predict

from irv2cli.inputs.decoding import Decoded
from irv2cli.inputs.paths import InputSelection, iter_image_paths
from irv2cli.pipeline.batches import iter_batches

pytestmark = pytest.mark.in_memory_engine  # the subject is not the network


@pytest.fixture
def messy(tmp_path, samples) -> Path:
    """Good photos, nested folders, and every kind of file that is not a usable image."""
    root = tmp_path / "messy"
    (root / "nested" / "deeper").mkdir(parents=True)
    shutil.copy(samples / "chelsea.jpg", root / "cat.jpg")
    shutil.copy(samples / "coffee.jpg", root / "nested" / "coffee.jpg")
    shutil.copy(samples / "rocket.jpg", root / "nested" / "deeper" / "rocket.jpg")
    (root / "truncated.jpg").write_bytes((samples / "rocket.jpg").read_bytes()[:4000])
    (root / "corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\n" + os.urandom(200))
    (root / "notes.txt").write_text("hello")
    (root / "empty.jpg").write_bytes(b"")
    (root / "dangling.jpg").symlink_to(root / "gone.jpg")
    (root / ".hidden.jpg").write_bytes((samples / "chelsea.jpg").read_bytes())
    return root


GOOD = {"cat.jpg", "nested/coffee.jpg", "nested/deeper/rocket.jpg"}
BAD = {"truncated.jpg", "corrupt.png", "notes.txt", "empty.jpg", "dangling.jpg"}


def relative(records, root: Path) -> dict[str, dict]:
    return {os.path.relpath(r["path"], root): r for r in records}


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def test_every_file_gets_exactly_one_record(weights, messy, tmp_path):
    out = tmp_path / "results.jsonl"
    result = predict(messy, "--weights", weights, "--output", out, "--batch-size", "3")
    assert result.exit_code == 1
    records = read_jsonl(out)
    by_path = relative(records, messy)
    assert len(records) == len(by_path) == len(GOOD | BAD)
    assert set(by_path) == GOOD | BAD
    assert all(by_path[p]["error"] is None and len(by_path[p]["predictions"]) == 5
               for p in GOOD)
    assert all(by_path[p]["error"] and by_path[p]["predictions"] == [] for p in BAD)
    assert [r["path"] for r in records] == sorted(r["path"] for r in records)
    assert "3 classified, 5 failed" in result.stderr
    assert result.stdout == ""


def test_walk_options_select_files(messy):
    def walk(**options):
        return {os.path.relpath(p, messy)
                for p in iter_image_paths([str(messy)], InputSelection(**options))}

    assert walk() == GOOD | BAD
    assert walk(recursive=False) == {"cat.jpg"} | BAD
    assert walk(globs=("*.jpg",)) == GOOD | {"truncated.jpg", "empty.jpg", "dangling.jpg"}
    assert walk(globs=("nested/*.jpg", "*.png")) == {"nested/coffee.jpg", "corrupt.png"}
    assert ".hidden.jpg" in walk(include_hidden=True)


def test_symlink_loops_are_walked_once(tmp_path, samples):
    root = tmp_path / "loop"
    (root / "a").mkdir(parents=True)
    shutil.copy(samples / "chelsea.jpg", root / "a" / "cat.jpg")
    (root / "a" / "back").symlink_to(root)
    assert [os.path.relpath(p, root) for p in iter_image_paths([str(root)])] == ["a/cat.jpg"]


def test_decoding_runs_a_bounded_distance_ahead():
    consumed = []

    def paths():
        for i in range(100):
            consumed.append(i)
            yield str(i)

    def submit(path: str) -> Future:
        decoded = Future()
        decoded.set_result(Decoded(np.zeros((299, 299, 3), np.uint8)))
        return decoded

    batches = iter_batches(paths(), submit, batch_size=4)
    first = next(batches)
    assert first.paths == ("0", "1", "2", "3")
    assert len(consumed) <= 4 * 3 + 1
    assert sum(len(b.paths) for b in batches) == 96


WEIRD_NAMES = ["with space.jpg", 'quote".jpg', "comma,name.jpg", "ünïcödé 猫.jpg",
               "apostrophe's.jpg"]


@pytest.fixture
def weird(tmp_path, samples) -> Path:
    root = tmp_path / "weird"
    root.mkdir()
    for name in WEIRD_NAMES:
        shutil.copy(samples / "coffee.jpg", root / name)
    return root


def test_csv_round_trips_awkward_paths(weights, weird, tmp_path):
    out = tmp_path / "r.csv"
    assert predict(weird, "--weights", weights, "--output", out, "-k", "2").exit_code == 0
    with open(out, newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 2 * len(WEIRD_NAMES)
    assert {Path(r["path"]).name for r in rows} == set(WEIRD_NAMES)


@pytest.mark.parametrize("suffix", ["jsonl", "json"])
def test_json_outputs_round_trip_awkward_paths(weights, weird, tmp_path, suffix):
    out = tmp_path / f"r.{suffix}"
    assert predict(weird, "--weights", weights, "--output", out).exit_code == 0
    text = out.read_text(encoding="utf-8")
    records = read_jsonl(out) if suffix == "jsonl" else json.loads(text)
    assert sorted(Path(r["path"]).name for r in records) == sorted(WEIRD_NAMES)


def test_existing_output_is_never_overwritten_without_asking(weights, weird, tmp_path):
    out = tmp_path / "r.jsonl"
    out.write_text("precious\n")
    result = predict(weird, "--weights", weights, "--output", out)
    assert result.exit_code == 1
    assert "--resume" in result.stderr and "--overwrite" in result.stderr
    assert out.read_text() == "precious\n"
    assert predict(weird, "--weights", weights, "--output", out, "--overwrite").exit_code == 0
    assert len(read_jsonl(out)) == len(WEIRD_NAMES)


@pytest.mark.parametrize("suffix", ["jsonl", "json", "csv"])
def test_resume_repairs_a_torn_tail_and_finishes_the_rest(weights, weird, tmp_path, suffix):
    out = tmp_path / f"r.{suffix}"
    assert predict(weird, "--weights", weights, "--output", out, "-k", "3").exit_code == 0
    complete = out.read_bytes()
    # A crash while the 3rd record was being written: keep 2 records and half of the 3rd.
    if suffix == "csv":
        lines = complete.split(b"\n")
        torn = b"\n".join(lines[: 1 + 3 * 2 + 2]) + b"\n" + lines[1 + 3 * 2 + 2][:10]
    else:
        lines = complete.split(b"\n")
        head = 1 if suffix == "json" else 0
        torn = b"\n".join(lines[: head + 2]) + b"\n" + lines[head + 2][:25]
    out.write_bytes(torn)
    result = predict(weird, "--weights", weights, "--output", out, "-k", "3", "--resume")
    assert result.exit_code == 0, result.output
    assert "2 already in" in result.stderr
    resumed, expected = read_records(out), read_records_from(complete, out)
    assert [row[:3] for row in resumed] == [row[:3] for row in expected]
    assert [row[3] for row in resumed] == pytest.approx([row[3] for row in expected], abs=1e-5)


def read_records(path: Path) -> list[tuple]:
    return read_records_from(path.read_bytes(), path)


def read_records_from(data: bytes, path: Path) -> list[tuple]:
    """(path, rank, index, score) rows of a results file, whatever its format."""
    text = data.decode("utf-8")
    if path.suffix == ".csv":
        return [(r["path"], int(r["rank"]), int(r["index"]), float(r["score"]))
                for r in csv.DictReader(text.splitlines())]
    records = (json.loads(text) if path.suffix == ".json"
               else [json.loads(line) for line in text.splitlines()])
    return [(r["path"], p["rank"], p["index"], p["score"])
            for r in records for p in r["predictions"]]


def test_resume_with_everything_done_loads_no_model(weird, tmp_path, top_weights,
                                                    monkeypatch, cached_engines):
    out = tmp_path / "r.jsonl"
    assert predict(weird, "--weights", top_weights, "--output", out).exit_code == 0
    from irv2cli.engines import base as engines

    monkeypatch.setattr(engines, "load_engine", None)  # would fail if called
    result = predict(weird, "--weights", top_weights, "--output", out, "--resume")
    assert result.exit_code == 0
    assert len(read_jsonl(out)) == len(WEIRD_NAMES)


def start_and_wait_for_lines(command: list[str], out: Path, lines: int) -> subprocess.Popen:
    """Start ``command`` and return once ``out`` holds ``lines`` lines, the run still going."""
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                               text=True)
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline and process.poll() is None:
        if out.exists() and out.read_text().count("\n") >= lines:
            break
        time.sleep(0.05)
    assert process.poll() is None, "the run finished before it could be stopped"
    return process


def test_sigkill_then_resume_gives_every_image_exactly_once(top_weights, runtime_ready,
                                                            tmp_path, samples):
    folder = tmp_path / "many"
    folder.mkdir()
    for i in range(24):
        shutil.copy(samples / ("chelsea.jpg", "coffee.jpg", "rocket.jpg")[i % 3],
                    folder / f"img{i:02d}.jpg")
    out = tmp_path / "results.jsonl"
    command = [sys.executable, "-m", "irv2cli", "predict", str(folder), "--weights",
               str(top_weights), "--output", str(out), "--batch-size", "2", "--quiet"]
    process = start_and_wait_for_lines(command, out, 4)
    process.send_signal(signal.SIGKILL)
    process.communicate()
    written = out.read_text().count("\n")
    assert 4 <= written < 24
    subprocess.run([*command, "--resume"], check=True, timeout=300,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    paths = [r["path"] for r in read_jsonl(out)]
    assert sorted(paths) == sorted(str(p) for p in folder.iterdir())
    assert len(paths) == len(set(paths)) == 24


def test_resume_refuses_a_file_that_is_not_results_and_keeps_it(weights, weird, tmp_path):
    out = tmp_path / "r.jsonl"
    out.write_text('{"path": "a.jpg", "predictions": [], "error": "x"}\nsomething else\n')
    before = out.read_bytes()
    result = predict(weird, "--weights", weights, "--output", out, "--resume")
    assert result.exit_code == 1
    assert "line 2 is not a result record" in result.stderr
    assert out.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".r.jsonl")] == []


def test_ctrl_c_stops_cleanly_and_closes_the_json_array(top_weights, runtime_ready, tmp_path,
                                                         samples):
    folder = copies(samples / "coffee.jpg", tmp_path / "many", numbered(30))
    out = tmp_path / "results.json"
    process = start_and_wait_for_lines(
        [sys.executable, "-m", "irv2cli", "predict", str(folder), "--weights", str(top_weights),
         "--output", str(out), "--batch-size", "1"], out, 3)
    process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 130
    assert "--resume" in stderr and "Traceback" not in stderr
    records = json.loads(out.read_text())  # a complete, closed array
    assert 2 <= len(records) < 30
    assert all(r["error"] is None for r in records)
