"""Results files under faults: nothing lost, nothing destroyed, every image exactly once.

Two runs on one file, outputs that are not files, foreign files, torn tails, full and
read-only disks, file names that are not UTF-8, control characters in CSV, another -k,
other spellings of the same folder, and Ctrl-C while the old file is read.
"""

from __future__ import annotations

import csv
import fcntl
import io
import json
import os
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest
from support import ROOT, copies, fill, predict, tmpfs

from irv2cli.engines import base as engines
from irv2cli.errors import WeightsError
from irv2cli.inputs.paths import path_key
from irv2cli.results import files as results
from irv2cli.results.files import scan_results
from irv2cli.results.labels import Prediction
from irv2cli.results.records import Record
from irv2cli.results.writers import CsvWriter

pytestmark = pytest.mark.in_memory_engine  # the subject is not the network


@pytest.fixture
def folder(tmp_path, samples) -> Path:
    """Four photos."""
    return copies(samples / "coffee.jpg", tmp_path / "photos", [f"img{i}.jpg" for i in range(4)])


def jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_bytes().decode().splitlines()]


def csv_paths(path: Path) -> list[str]:
    with open(path, encoding="utf-8", errors="surrogateescape", newline="") as f:
        return [row["path"] for row in csv.DictReader(f)]


def paths_in(path: Path) -> list[str]:
    """Each record's path, once per record, whatever the format."""
    if path.suffix == ".csv":
        return list(dict.fromkeys(csv_paths(path)))
    if path.suffix == ".json":
        return [r["path"] for r in json.loads(path.read_bytes())]
    return [r["path"] for r in jsonl(path)]


def one_line(stderr: str) -> str:
    assert "Traceback" not in stderr
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert len(lines) == 1, stderr
    return lines[0]


def torn(out: Path, records: int) -> bytes:
    """Cut ``out`` (JSON Lines) after ``records`` records and half of the next one."""
    lines = out.read_bytes().split(b"\n")
    out.write_bytes(b"\n".join(lines[:records]) + b"\n" + lines[records][:30])
    return out.read_bytes()


# --- two runs, one file ---------------------------------------------------------------

@pytest.mark.parametrize("mode", ["--resume", "--overwrite"])
def test_a_second_run_on_a_file_in_use_is_refused_at_once(weights, folder, tmp_path, mode):
    out = tmp_path / "r.jsonl"
    assert predict(folder, "--weights", weights, "-o", out).exit_code == 0
    before = out.read_bytes()
    with open(out, "rb") as other_run:
        fcntl.flock(other_run, fcntl.LOCK_EX)
        result = predict(folder, "--weights", weights, "-o", out, mode)
    assert result.exit_code == 1
    assert f"{out} is being written by another irv2 run" in one_line(result.stderr)
    assert out.read_bytes() == before


# --- outputs that are not regular files ----------------------------------------------

def make_fifo(path: Path) -> None:
    os.mkfifo(path)


def make_directory(path: Path) -> None:
    path.mkdir()


def make_full_device(path: Path) -> None:  # like /dev/full: reading it never ends
    if not ROOT:
        pytest.skip("mknod needs root on Linux")
    os.mknod(path, stat.S_IFCHR | 0o666, os.makedev(1, 7))


@pytest.mark.parametrize(("make", "message", "status"), [
    (make_fifo, "{out} is a FIFO (named pipe), not a regular file", 1),
    (make_full_device, "{out} is a character device, not a regular file", 1),
    (make_directory, "is a directory", 2),  # a usage error: only --runner ray writes folders
])
@pytest.mark.parametrize("resume", [True, False])
def test_an_output_that_is_not_a_regular_file_is_refused_before_reading_it(
        weights, folder, tmp_path, make, message, status, resume):
    out = tmp_path / "r.jsonl"
    make(out)
    kind = stat.S_IFMT(os.lstat(out).st_mode)
    result = predict(folder, "--weights", weights, "-o", out, *(["--resume"] if resume else []))
    assert result.exit_code == status
    assert message.format(out=out) in result.stderr
    assert stat.S_IFMT(os.lstat(out).st_mode) == kind


def test_resume_through_a_symlink_writes_the_target_and_keeps_link_and_mode(
        weights, folder, tmp_path):
    target = tmp_path / "real.jsonl"
    assert predict(folder, "--weights", weights, "-o", target).exit_code == 0
    torn(target, 2)
    target.chmod(0o640)
    link = tmp_path / "link.jsonl"
    link.symlink_to(target)
    inode = target.stat().st_ino
    assert predict(folder, "--weights", weights, "-o", link, "--resume").exit_code == 0
    assert link.is_symlink()
    assert target.stat().st_ino == inode
    assert stat.S_IMODE(target.stat().st_mode) == 0o640
    assert sorted(paths_in(target)) == sorted(str(p) for p in folder.iterdir())


# --- resume in place ------------------------------------------------------------------

@pytest.mark.parametrize("suffix", ["jsonl", "json", "csv"])
def test_resume_writes_in_place_keeping_inode_links_and_no_temporary_files(
        weights, folder, tmp_path, suffix):
    out = tmp_path / f"r.{suffix}"
    assert predict(folder, "--weights", weights, "-o", out, "-k", "2").exit_code == 0
    data = out.read_bytes()
    out.write_bytes(data[: len(data) * 2 // 3])  # a crash in the middle of the 3rd image
    os.link(out, tmp_path / "hard-link")
    inode = out.stat().st_ino
    result = predict(folder, "--weights", weights, "-o", out, "-k", "2", "--resume")
    assert result.exit_code == 0, result.output
    assert out.stat().st_ino == inode
    assert (tmp_path / "hard-link").read_bytes() == out.read_bytes()
    assert sorted(paths_in(out)) == sorted(str(p) for p in folder.iterdir())
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        ["hard-link", "photos", f"r.{suffix}"])


def test_a_one_line_file_that_is_not_results_is_refused_and_kept(weights, folder, tmp_path):
    out = tmp_path / "r.jsonl"
    out.write_bytes(b'{"a": 1}')
    result = predict(folder, "--weights", weights, "-o", out, "--resume")
    assert result.exit_code == 1
    assert "line 1 is not a result record" in one_line(result.stderr)
    assert out.read_bytes() == b'{"a": 1}'


def test_a_tear_inside_a_multibyte_character_is_just_a_torn_tail(weights, tmp_path, samples):
    folder = copies(samples / "chelsea.jpg", tmp_path / "猫猫",
                    ["猫一.jpg", "猫二.jpg", "猫三.jpg"])
    out = tmp_path / "r.jsonl"
    assert predict(folder, "--weights", weights, "-o", out).exit_code == 0
    lines = out.read_bytes().split(b"\n")
    cut = lines[2].index("猫".encode()) + 1  # one byte into a three-byte character
    out.write_bytes(b"\n".join(lines[:2]) + b"\n" + lines[2][:cut])
    result = predict(folder, "--weights", weights, "-o", out, "--resume")
    assert result.exit_code == 0, result.output
    assert sorted(paths_in(out)) == sorted(str(p) for p in folder.iterdir())


# --- nothing created before the engine is ready ---------------------------------------

@pytest.fixture
def broken_engine(weights, monkeypatch):
    def refuse(*args, **kwargs):
        raise WeightsError("top.h5: not a weights file.")

    monkeypatch.setattr(engines, "load_engine", refuse)
    return weights


@pytest.mark.parametrize("suffix", ["json", "jsonl", "csv"])
def test_a_run_that_fails_before_its_first_record_leaves_no_file(broken_engine, folder,
                                                                 tmp_path, suffix):
    out = tmp_path / f"r.{suffix}"
    result = predict(folder, "--weights", broken_engine, "-o", out)
    assert result.exit_code == 1
    assert "not a weights file" in one_line(result.stderr)
    assert not out.exists()


def test_overwrite_keeps_the_old_file_until_the_first_record(broken_engine, folder, tmp_path):
    out = tmp_path / "r.jsonl"
    out.write_text("precious\n")
    assert predict(folder, "--weights", broken_engine, "-o", out, "--overwrite").exit_code == 1
    assert out.read_text() == "precious\n"


def test_an_empty_file_counts_as_missing(weights, folder, tmp_path):
    out = tmp_path / "r.json"
    out.touch()
    assert predict(folder, "--weights", weights, "-o", out).exit_code == 0
    assert len(paths_in(out)) == 4


# --- names that are not UTF-8 ---------------------------------------------------------

@pytest.fixture
def latin1(tmp_path, samples) -> Path:
    """A folder holding ``café.jpg`` spelt in Latin-1 (not valid UTF-8) and a plain name."""
    root = tmp_path / "latin1"
    root.mkdir()
    shutil.copy(samples / "coffee.jpg", os.path.join(os.fsencode(root), b"caf\xe9.jpg"))
    shutil.copy(samples / "coffee.jpg", root / "plain.jpg")
    return root


@pytest.mark.parametrize("suffix", ["jsonl", "json", "csv"])
def test_names_that_are_not_utf8_round_trip_and_resume(weights, latin1, tmp_path, suffix):
    out = tmp_path / f"r.{suffix}"
    assert predict(latin1, "--weights", weights, "-o", out).exit_code == 0
    result = predict(latin1, "--weights", weights, "-o", out, "--resume")
    assert result.exit_code == 0, result.output
    assert "2 already in" in result.stderr
    names = sorted(os.fsencode(p) for p in paths_in(out))
    assert names == sorted(os.path.join(os.fsencode(latin1), n)
                           for n in (b"caf\xe9.jpg", b"plain.jpg"))


def test_names_that_are_not_utf8_print_safely(weights, latin1):
    result = predict(latin1, "--weights", weights)
    assert result.exit_code == 0, result.output
    assert "caf\\udce9.jpg" in result.stdout


def test_names_are_shown_as_named_never_as_markup_or_terminal_controls(weights, tmp_path,
                                                                         samples):
    root = tmp_path / "odd"
    root.mkdir()
    shutil.copy(samples / "coffee.jpg", root / "[bold]cat[red].jpg")
    (root / "evil\x1b[31m\nerror: fake.jpg").write_bytes(b"not an image")
    result = predict(root, "--weights", weights)
    assert result.exit_code == 1, result.output
    assert "[bold]cat[red].jpg" in result.stdout.replace("\n", "")  # a title, not markup
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1  # the newline in the name does not start a second line
    assert "evil\\x1b[31m\\x0aerror: fake.jpg" in errors[0]
    assert "\x1b" not in result.stderr


def test_an_input_given_twice_is_classified_once(weights, latin1, tmp_path, monkeypatch):
    monkeypatch.chdir(latin1.parent)
    out = tmp_path / "r.jsonl"
    assert predict(latin1.name, f"./{latin1.name}", latin1, "--weights", weights,
                   "-o", out).exit_code == 0
    assert len(paths_in(out)) == 2


# --- CSV and control characters -------------------------------------------------------

CONTROL = [chr(c) for c in range(1, 32)] + ["\x7f"]


@pytest.mark.parametrize("char", CONTROL, ids=[f"{ord(c):02x}" for c in CONTROL])
def test_csv_round_trips_every_control_character(char):
    name = f"a{char}b.jpg"
    stream = io.StringIO()
    writer = CsvWriter(stream)
    writer.write(Record(name, [Prediction(1, 285, "n02124075", "Egyptian_cat", 0.5)]))
    writer.write(Record("next.jpg", error="next.jpg: not an image"))
    data = stream.getvalue().encode()
    held = scan_results(io.BytesIO(data), Path("r.csv"), "csv", top_k=1)
    assert held.paths == {path_key(name), path_key("next.jpg")}
    assert held.end == len(data)


def test_a_carriage_return_in_a_name_resumes_without_duplicates(weights, tmp_path, samples):
    folder = copies(samples / "coffee.jpg", tmp_path / "cr",
                    ["a\rb.jpg", "c\r\nd.jpg", "plain.jpg"])
    out = tmp_path / "r.csv"
    assert predict(folder, "--weights", weights, "-o", out, "-k", "2").exit_code == 0
    assert predict(folder, "--weights", weights, "-o", out, "-k", "2",
                   "--resume").exit_code == 0
    assert sorted(csv_paths(out)) == sorted(2 * [str(p) for p in folder.iterdir()])


# --- another -k -----------------------------------------------------------------------

@pytest.mark.parametrize("suffix", ["jsonl", "json", "csv"])
def test_resume_with_another_k_is_refused_naming_the_files_k(weights, folder, tmp_path,
                                                             suffix):
    out = tmp_path / f"r.{suffix}"
    assert predict(folder, "--weights", weights, "-o", out, "-k", "3").exit_code == 0
    before = out.read_bytes()
    result = predict(folder, "--weights", weights, "-o", out, "-k", "5", "--resume")
    assert result.exit_code == 1
    assert f"{out} holds top-3 results and this run asks for top-5" in one_line(result.stderr)
    assert "run with the same -k" in one_line(result.stderr)
    assert out.read_bytes() == before


def test_a_csv_image_cut_short_is_not_taken_for_a_smaller_k(weights, folder, tmp_path):
    out = tmp_path / "r.csv"
    assert predict(folder, "--weights", weights, "-o", out, "-k", "5").exit_code == 0
    lines = out.read_bytes().splitlines(keepends=True)
    out.write_bytes(b"".join(lines[: 1 + 5 + 2]))  # the 2nd image cut after 2 of its 5 rows
    result = predict(folder, "--weights", weights, "-o", out, "-k", "2", "--resume")
    assert result.exit_code == 1
    assert "holds top-5 results and this run asks for top-2" in one_line(result.stderr)


# --- one normal form for paths; the output is never an input -------------------------

def test_another_spelling_of_the_same_folder_classifies_nothing_again(
        weights, folder, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    out = tmp_path / "r.jsonl"
    assert predict("photos", "--weights", weights, "-o", out).exit_code == 0
    for spelling in ("./photos", str(folder), "photos/../photos/"):
        result = predict(spelling, "--weights", weights, "-o", out, "--resume")
        assert "0 classified, 0 failed" in result.stderr
        assert "4 already in" in result.stderr
    assert len(paths_in(out)) == 4


def test_the_output_inside_an_input_folder_is_not_an_input(weights, folder):
    out = folder / "results.jsonl"
    assert predict(folder, "--weights", weights, "-o", out).exit_code == 0
    result = predict(folder, "--weights", weights, "-o", out, "--resume")
    assert result.exit_code == 0
    assert "0 classified, 0 failed" in result.stderr
    assert sorted(paths_in(out)) == sorted(str(folder / f"img{i}.jpg") for i in range(4))


def test_a_fifo_in_an_input_folder_is_an_error_record_not_a_hang(weights, folder, tmp_path):
    os.mkfifo(folder / "pipe.jpg")
    out = tmp_path / "r.jsonl"
    assert predict(folder, "--weights", weights, "-o", out).exit_code == 1
    errors = {r["path"]: r["error"] for r in jsonl(out) if r["error"]}
    assert list(errors) == [str(folder / "pipe.jpg")]
    assert "not a regular file" in errors[str(folder / "pipe.jpg")]


# --- Ctrl-C while the old file is read; exit status of a resumed run ------------------

def test_ctrl_c_while_reading_the_old_file_exits_130_and_keeps_it(weights, folder, tmp_path,
                                                                   monkeypatch):
    out = tmp_path / "r.jsonl"
    assert predict(folder, "--weights", weights, "-o", out).exit_code == 0
    before = torn(out, 2)

    def interrupted(*args):
        raise KeyboardInterrupt

    monkeypatch.setattr(results, "scan_results", interrupted)
    result = predict(folder, "--weights", weights, "-o", out, "--resume")
    assert result.exit_code == 130
    assert "--resume" in result.stderr and "Aborted" not in result.stderr
    assert out.read_bytes() == before


def test_a_resumed_run_exits_1_when_the_file_holds_an_error(weights, folder, tmp_path):
    (folder / "notes.txt").write_text("not an image")
    out = tmp_path / "r.jsonl"
    assert predict(folder, "--weights", weights, "-o", out).exit_code == 1
    result = predict(folder, "--weights", weights, "-o", out, "--resume")
    assert result.exit_code == 1
    assert "(1 of them failed)" in result.stderr
    (folder / "notes.txt").unlink()
    clean = tmp_path / "clean.jsonl"
    assert predict(folder, "--weights", weights, "-o", clean).exit_code == 0
    assert predict(folder, "--weights", weights, "-o", clean, "--resume").exit_code == 0


# --- full and read-only disks ---------------------------------------------------------

@pytest.fixture
def small_disk(tmp_path):
    """A 64 KiB tmpfs, unmounted afterwards."""
    with tmpfs(tmp_path / "disk", "64k") as mount:
        yield mount


def test_a_full_disk_is_one_line_keeps_whole_records_and_resumes(weights, small_disk,
                                                                 tmp_path, samples):
    folder = tmp_path / "many"
    folder.mkdir()
    for i in range(12):
        shutil.copy(samples / "coffee.jpg", folder / f"img{i:02d}.jpg")
    filler = fill(small_disk, leave=4096)
    out = small_disk / "r.jsonl"
    result = predict(folder, "--weights", weights, "-o", out, "--batch-size", "2")
    assert result.exit_code == 1
    assert one_line(result.stderr) == (
        f"Error: {out}: no space left on device; free space; then run the same command "
        "with --resume.")
    data = out.read_bytes()
    assert data.endswith(b"\n") and 0 < len(jsonl(out)) < 12
    assert sorted(p.name for p in small_disk.iterdir()) == ["filler", "r.jsonl"]
    filler.unlink()
    assert predict(folder, "--weights", weights, "-o", out, "--resume").exit_code == 0
    assert sorted(paths_in(out)) == sorted(str(p) for p in folder.iterdir())


def test_resume_on_a_read_only_disk_is_one_line(weights, small_disk, folder):
    out = small_disk / "r.jsonl"
    assert predict(folder, "--weights", weights, "-o", out).exit_code == 0
    before = torn(out, 2)
    subprocess.run(["mount", "-o", "remount,ro", str(small_disk)], check=True)
    result = predict(folder, "--weights", weights, "-o", out, "--resume")
    assert result.exit_code == 1
    assert one_line(result.stderr) == (
        f"Error: {out}: cannot write results (read-only file system).")
    assert out.read_bytes() == before


def run_to_stdout(folder: Path, weights: Path, stdout,
                  fmt: str = "jsonl") -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "irv2cli", "predict", str(folder),
                           "--weights", str(weights), "--format", fmt, "--quiet"],
                          stdout=stdout, stderr=subprocess.PIPE, text=True, timeout=300)


@pytest.mark.skipif(not os.path.exists("/dev/full"), reason="no /dev/full here")
@pytest.mark.parametrize("fmt", ["jsonl", "table"])
def test_stdout_on_a_full_device_is_one_line(runtime_ready, top_weights, folder, fmt):
    with open("/dev/full", "w") as full:
        result = run_to_stdout(folder, top_weights, full, fmt)
    assert result.returncode == 1
    assert one_line(result.stderr) == (
        "Error: stdout: no space left on device; free space and run again.")


def test_a_closed_stderr_is_no_failure(runtime_ready, top_weights, folder, tmp_path):
    """A run started with stderr closed (``2>&-``) used to hang: its decoding workers,
    started without a stderr, died and were replaced for ever."""
    out = tmp_path / "labels.jsonl"
    done = subprocess.run([sys.executable, "-m", "irv2cli", "predict", str(folder),
                           "--weights", str(top_weights), "--output", str(out)],
                          stdout=subprocess.DEVNULL, preexec_fn=lambda: os.close(2),
                          timeout=300)
    assert done.returncode == 0
    assert len(out.read_text().splitlines()) == len(list(folder.iterdir()))


def test_a_closed_pipe_on_stdout_stops_quietly(runtime_ready, top_weights, folder):
    read, write = os.pipe()
    os.close(read)
    with os.fdopen(write, "w") as closed:
        result = run_to_stdout(folder, top_weights, closed)
    assert result.returncode == 1
    assert "Traceback" not in result.stderr and "Error" not in result.stderr


def test_an_overwrite_interrupted_before_its_first_result_says_the_file_is_as_it_was(
        tmp_path):
    """--overwrite replaces the file only once a result is ready (a run on Ray starts
    for seconds first): "run again with --resume" would mix the old records in."""
    from rich.console import Console

    from irv2cli.cli.plan import RunPlan
    from irv2cli.cli.runs import summarize
    from irv2cli.pipeline.job import RunOptions
    from irv2cli.pipeline.run import RunSummary

    said = io.StringIO()
    output = tmp_path / "labels.jsonl"
    plan = RunPlan(("photos",), output, RunOptions(overwrite=True))
    summarize(Console(file=said, width=300), plan, RunSummary(0, 0, 0, 0, 1.0, output),
              interrupted=True)

    assert said.getvalue().startswith(f"Interrupted before the first result: {output} is "
                                      "as it was")
    assert "--resume" not in said.getvalue()


def test_a_ctrl_c_that_lands_as_a_record_is_written_keeps_the_json_array_whole(
        tmp_path, monkeypatch):
    """The signal arrives right after a record's bytes reach the file (found by the suite
    under load: the closing ``]`` was then written over that record's start)."""
    import signal

    from irv2cli.pipeline.job import RunOptions
    from irv2cli.pipeline.run import open_sink
    from irv2cli.results import locked

    write_at = locked.write_at

    def write_then_interrupt(fd: int, data: bytes, offset: int) -> None:
        write_at(fd, data, offset)
        if b"b.jpg" in data:
            signal.raise_signal(signal.SIGINT)

    monkeypatch.setattr(locked, "write_at", write_then_interrupt)
    out = tmp_path / "labels.json"
    with pytest.raises(KeyboardInterrupt), open_sink(out, RunOptions()) as output:
        for name in ("a", "b", "c"):
            output.writer.write(Record(f"/photos/{name}.jpg",
                                       [Prediction(1, 0, "n01440764", "tench", 0.5)]))

    assert [record["path"] for record in json.loads(out.read_text())] == [
        "/photos/a.jpg", "/photos/b.jpg"]
