"""No file can take a run down: decoders that crash, hang, exhaust memory, raise or spray
warnings cost their own file a record and nothing else.

The misbehaving decoders are a test-only Pillow plugin (tests/hostile/hostile_images.py)
that the decoding worker processes load through ``sitecustomize`` on PYTHONPATH.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import signal
import subprocess
import sys
import time
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path

import click
import numpy as np
import pytest
from PIL import Image
from support import (
    children_of,
    decoding_workers_of,
    hostile_folder,
    hostile_images,
    hostile_pythonpath,
)

from irv2cli.cli.options import ByteSize
from irv2cli.inputs.decoding import Decoded, DecodeLimits, DecodePool
from irv2cli.inputs.images import Preprocessing
from irv2cli.inputs.paths import iter_image_paths

LIMITS = DecodeLimits(memory=256 << 20, timeout=2.0)


@pytest.fixture(autouse=True)
def hostile_decoders(monkeypatch):
    """Worker processes started by these tests load the misbehaving Pillow plugin."""
    monkeypatch.setenv("PYTHONPATH", hostile_pythonpath())


EXPECTED_ERRORS = {
    "b_segfault.img": "decoder crashed (SIGSEGV)",
    "b_allocate.img": "needed more than 256 MiB",
    "b_sleep.img": "took longer than 2 s",
    "b_raise.img": "RuntimeError",
    "d_lies_about_size.png": "cannot decode",
    "e_over_limit.png": "raise the pixel limit (max-pixels)",
    "f_truncated.jpg": "",
    "g_empty.jpg": "not an image",
}
CLASSIFIED = {"a_good.jpg", "b_warn.img", "c_needle.png", "h_good.jpg", "i_iphone.heic"}


def test_the_size_option_reads_binary_units():
    size = ByteSize()
    assert size.convert("2GiB", None, None) == size.convert("2G", None, None) == 2 << 30
    assert size.convert("512MiB", None, None) == size.convert("512m", None, None) == 512 << 20
    assert size.convert("1.5GiB", None, None) == 3 << 29
    assert size.convert("4096", None, None) == 4096
    for bad in ("lots", "-1G", "0"):
        with pytest.raises(click.BadParameter, match="not a size"):
            size.convert(bad, None, None)


@pytest.mark.slow  # decoding worker processes
def test_each_misbehaving_decoder_costs_only_its_own_file(tmp_path, samples, capfd):
    folder = hostile_folder(tmp_path / "hostile", samples)
    paths = sorted(str(p) for p in folder.iterdir())
    with DecodePool(2, LIMITS) as pool:
        outcomes = {Path(p).name: pool.submit(p, Preprocessing()).result() for p in paths}
    for name, says in EXPECTED_ERRORS.items():
        assert isinstance(outcomes[name], str), name
        assert outcomes[name].startswith(str(folder / name) + ": ")
        assert says in outcomes[name]
    for name in CLASSIFIED:
        assert isinstance(outcomes[name], Decoded), outcomes[name]
        assert outcomes[name].pixels.shape == (299, 299, 3)
        assert outcomes[name].pixels.dtype.name == "uint8"
    assert outcomes["b_warn.img"].warnings == (
        "UserWarning: hostile decoder: corrupt metadata",
        "TIFFFillStrip: hostile C-library noise",
    )
    assert outcomes["a_good.jpg"].warnings == ()
    printed = capfd.readouterr()
    assert "hostile" not in printed.err + printed.out  # nothing reached the terminal


@pytest.mark.slow  # decoding worker processes
def test_a_worker_that_dies_is_replaced(tmp_path, samples):
    crash = hostile_images.write(tmp_path / "crash.img", "segfault")
    with DecodePool(1, LIMITS) as pool:
        for _ in range(3):
            assert "SIGSEGV" in pool.submit(str(crash), Preprocessing()).result()
            good = pool.submit(str(samples / "chelsea.jpg"), Preprocessing()).result()
            assert isinstance(good, Decoded)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="RLIMIT_AS: Linux only")
@pytest.mark.slow  # decoding worker processes
def test_a_deep_grey_image_decodes_within_a_modest_memory_ceiling(tmp_path):
    deep = np.arange(4000 * 4000, dtype=np.uint32).astype(np.uint16).reshape(4000, 4000)
    Image.fromarray(deep).save(tmp_path / "scan.png")  # 16 megapixels, 16 bits deep
    with DecodePool(1, DecodeLimits(memory=400 << 20)) as pool:  # float64 copies needed 560
        assert isinstance(pool.submit(str(tmp_path / "scan.png"), Preprocessing()).result(),
                          Decoded)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc; Linux only")
@pytest.mark.slow  # decoding worker processes
def test_a_worker_killed_between_files_does_not_stop_decoding(samples):
    with DecodePool(2, LIMITS) as pool:
        assert isinstance(pool.submit(str(samples / "chelsea.jpg"), Preprocessing()).result(),
                          Decoded)
        idle = decoding_workers_of(os.getpid())[0]
        os.kill(idle, signal.SIGKILL)  # as the system's out-of-memory killer might
        time.sleep(0.5)  # pebble notices, and gives its pool up
        for _ in range(3):
            outcome = pool.submit(str(samples / "coffee.jpg"), Preprocessing()).result()
            assert isinstance(outcome, Decoded)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc; Linux only")
@pytest.mark.slow  # decoding worker processes
def test_files_submitted_as_the_only_worker_dies_are_decoded_by_a_new_one(samples):
    """pebble gives its pool up when it finds a worker dead and no file in any worker: the
    files submitted just before, still waiting for one, go to a new pool."""
    with DecodePool(1, LIMITS) as pool:
        assert isinstance(pool.submit(str(samples / "chelsea.jpg"), Preprocessing()).result(),
                          Decoded)
        worker = decoding_workers_of(os.getpid())[0]
        os.kill(worker, signal.SIGKILL)
        waiting = [pool.submit(str(samples / "coffee.jpg"), Preprocessing()) for _ in range(3)]
        assert all(isinstance(outcome.result(timeout=60), Decoded) for outcome in waiting)


@pytest.mark.slow  # decoding worker processes
def test_files_still_queued_when_pebble_gives_its_pool_up_are_decoded_by_a_new_one(samples):
    """pebble gives its pool up (when it finds every worker dead between files, say) without
    settling the files queued in it. No later ``submit`` need come to notice: each file
    must still get its outcome."""
    with DecodePool(1, LIMITS) as pool:
        waiting = [pool.submit(str(samples / "coffee.jpg"), Preprocessing()) for _ in range(12)]
        pool._pool.stop()  # what pebble does to a pool it gives up; the worker is starting
        assert all(isinstance(outcome.result(timeout=30), Decoded) for outcome in waiting)


@pytest.mark.slow  # decoding worker processes
def test_files_stranded_when_no_new_pool_can_start_say_so_and_later_files_decode(
        samples, monkeypatch):
    """Found by a hostile review: a new pool that failed to start (out of descriptors, or
    of processes) lost the files the old one held, and ended the watchdog."""
    start, starts = DecodePool._start, []

    def second_start_fails(pool: DecodePool):
        starts.append(pool)
        if len(starts) == 2:  # the first is the pool's own; its replacement fails
            raise OSError(errno.EMFILE, "Too many open files")
        return start(pool)

    monkeypatch.setattr(DecodePool, "_start", second_start_fails)
    with DecodePool(1, LIMITS) as pool:
        stranded = [pool.submit(str(samples / "coffee.jpg"), Preprocessing()) for _ in range(8)]
        pool._pool.stop()  # what pebble does to a pool it gives up; the worker is starting
        outcomes = [outcome.result(timeout=30) for outcome in stranded]
        assert all("no decoding worker could be started (OSError: [Errno 24]" in outcome
                   for outcome in outcomes)
        assert isinstance(pool.submit(str(samples / "chelsea.jpg"), Preprocessing()).result(
            timeout=30), Decoded)
        assert pool._watchdog.is_alive()


@pytest.mark.slow  # decoding worker processes
def test_close_leaves_no_outcome_pending(samples, monkeypatch):
    """Found by a hostile review: files failed by pebble as it gives its pool up go to a
    new pool from threads of their own, and close() returned before cancelling theirs."""
    retry = DecodePool._retry

    def slow_retry(pool: DecodePool, pending) -> None:
        time.sleep(0.5)  # widens the moment close() must not miss
        retry(pool, pending)

    monkeypatch.setattr(DecodePool, "_retry", slow_retry)
    with DecodePool(2, LIMITS) as pool:
        outcomes = [pool.submit(str(samples / "chelsea.jpg"), Preprocessing())
                    for _ in range(400)]
        time.sleep(0.5)  # workers up, files flowing
        # what pebble does when it finds every worker dead: fail the tasks it dispatched
        pool._pool._pool_manager.handle_broken_pool(BrokenProcessPool("All workers expired"))
        time.sleep(0.1)
    assert all(outcome.done() for outcome in outcomes)
    assert any(outcome.cancelled() for outcome in outcomes)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc; Linux only")
@pytest.mark.slow  # decoding worker processes
def test_every_worker_killed_while_many_files_wait_costs_no_outcome(samples):
    """Found against irv2 serve: a worker killed as it takes a file from pebble's channel
    leaves the channel locked, and pebble, giving its pool up, never settles the files
    still queued in it. Each file must still get its outcome: decoded, or its error."""
    photo = (samples / "chelsea.jpg").read_bytes()
    with DecodePool(2, LIMITS) as pool:
        for delay in (0.05, 0.15, 0.3, 0.05, 0.15, 0.3):  # killed at different moments
            outcomes = [pool.submit(f"{n}.jpg", Preprocessing(), photo) for n in range(36)]
            time.sleep(delay)
            for pid in decoding_workers_of(os.getpid()):
                with contextlib.suppress(ProcessLookupError):  # it ended meanwhile
                    os.kill(pid, signal.SIGKILL)
            for outcome in outcomes:
                assert isinstance(outcome.result(timeout=60), Decoded | str)


HIT_WHILE_STARTING = """
import os, signal, sys
from pathlib import Path
from irv2cli.inputs.decoding import DecodePool
from irv2cli.inputs.images import Preprocessing

pool = DecodePool(2)
me = Path(f"/proc/{os.getpid()}/task")
started = [int(c) for task in me.iterdir() for c in (task / "children").read_text().split()]
for pid in started:  # the workers are still starting Python; the resource tracker too
    os.kill(pid, signal.SIGINT)
    os.kill(pid, signal.SIGHUP)
print(type(pool.submit(sys.argv[1], Preprocessing()).result()).__name__)
print(all(Path(f"/proc/{pid}/stat").read_text().split(") ")[1][0] != "Z" for pid in started))
pool.close()
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc; Linux only")
@pytest.mark.slow  # starts a process
def test_ctrl_c_and_hangup_do_not_reach_processes_still_starting(samples):
    """A terminal sends Ctrl-C and its hang-up to the whole process group: a decoding
    worker still importing Python, or multiprocessing's resource tracker, must neither die
    nor print anything."""
    done = subprocess.run([sys.executable, "-c", HIT_WHILE_STARTING,
                           str(samples / "chelsea.jpg")], capture_output=True, text=True,
                          timeout=60)
    assert (done.stdout.split(), done.stderr) == (["Decoded", "True"], "")


@pytest.mark.slow  # decoding worker processes
def test_a_decode_memory_beyond_any_address_space_means_no_ceiling(samples):
    with DecodePool(1, DecodeLimits(memory=1 << 70, timeout=30.0)) as pool:
        outcome = pool.submit(str(samples / "chelsea.jpg"), Preprocessing()).result()
    assert isinstance(outcome, Decoded), outcome


UNDER_A_HARD_LIMIT = """
import resource
from irv2cli.inputs.decoding import _set_memory_ceiling

resource.setrlimit(resource.RLIMIT_AS, (64 << 30, 64 << 30))  # as `ulimit -v` sets it
allowed = _set_memory_ceiling(1 << 40)
print(resource.getrlimit(resource.RLIMIT_AS) == (64 << 30, 64 << 30), 0 < allowed < 64 << 30)
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="RLIMIT_AS: Linux only")
@pytest.mark.slow  # starts a process
def test_the_memory_ceiling_keeps_a_hard_limit_already_set():
    """Only root may raise a hard limit (``ulimit -v``): a worker that tried failed to
    start, so every file got "could not be decoded (BrokenProcessPool ...)"."""
    done = subprocess.run([sys.executable, "-c", UNDER_A_HARD_LIMIT], capture_output=True,
                          text=True, timeout=60)
    assert done.stdout.split() == ["True", "True"], done.stderr


@pytest.fixture
def folder_run(tmp_path, samples, top_weights, runtime_ready):
    """``irv2 predict`` on the hostile folder as a user runs it: a real process."""
    folder = hostile_folder(tmp_path / "hostile", samples)
    out = tmp_path / "results.jsonl"
    command = [sys.executable, "-m", "irv2cli", "predict", str(folder), "--weights",
               str(top_weights), "--output", str(out), "--batch-size", "3",
               "--decode-memory", "256MiB", "--decode-timeout", "2"]
    return folder, out, command


def records_by_name(out: Path) -> dict[str, dict]:
    records = [json.loads(line) for line in out.read_text().splitlines()]
    names = [Path(r["path"]).name for r in records]
    assert len(names) == len(set(names)), "a file has more than one record"
    return dict(zip(names, records, strict=True))


def test_a_folder_of_hostile_files_finishes_with_every_file_once(folder_run):
    folder, out, command = folder_run
    done = subprocess.run([*command, "--verbose"], capture_output=True, text=True, timeout=300)
    assert done.returncode == 1, done.stderr
    assert_every_hostile_file_once(records_by_name(out), done.stderr, folder)


def assert_every_hostile_file_once(records: dict[str, dict], stderr: str, folder: Path) -> None:
    """What a ``--verbose`` run of ``hostile_folder`` must give: each file once, classified
    or with the error its misbehaviour earns, no traceback, and the decoder's noise shown
    as warnings naming its file."""
    assert set(records) == set(EXPECTED_ERRORS) | CLASSIFIED
    for name in CLASSIFIED:
        assert records[name]["error"] is None and len(records[name]["predictions"]) == 5
    for name, says in EXPECTED_ERRORS.items():
        assert says in records[name]["error"] and records[name]["predictions"] == []
    assert "5 classified, 8 failed" in stderr
    assert "Traceback" not in stderr
    noise = [line for line in stderr.splitlines() if "b_warn" in line]
    assert noise == [
        f"warning: {folder / 'b_warn.img'}: UserWarning: hostile decoder: corrupt metadata",
        f"warning: {folder / 'b_warn.img'}: TIFFFillStrip: hostile C-library noise",
    ]


def alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(") ")[1][0] != "Z"
    except (FileNotFoundError, IndexError):
        return False


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc; Linux only")
def test_sigkill_while_a_decoder_hangs_then_resume_finishes(folder_run):
    _, out, command = folder_run
    slow = [*command[:-1], "60", "--batch-size", "1", "--workers", "2"]
    process = subprocess.Popen(slow, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and not (out.exists() and "b_raise" in out.read_text()):
        time.sleep(0.05)
    assert "b_sleep" not in out.read_text(), "the hanging file should still be decoding"
    workers = children_of(process.pid)
    assert workers, "no decoding worker processes"
    process.send_signal(signal.SIGKILL)
    process.wait()
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and any(alive(w) for w in workers):
        time.sleep(0.05)
    assert not any(alive(w) for w in workers), "decoding workers outlived the run"

    resumed = subprocess.run([*command, "--resume"], capture_output=True, text=True,
                             timeout=300)
    assert resumed.returncode == 1, resumed.stderr
    records = records_by_name(out)
    assert set(records) == set(EXPECTED_ERRORS) | CLASSIFIED
    assert "took longer than 2 s" in records["b_sleep.img"]["error"]


def test_a_link_to_itself_and_nesting_deeper_than_python_recursion_are_walked(tmp_path):
    root = tmp_path / "walk"
    root.mkdir()
    (root / "a.jpg").write_bytes(b"")
    (root / "self").symlink_to("self")  # ELOOP when followed
    folders = [root]
    for _ in range(sys.getrecursionlimit() + 100):
        folders.append(folders[-1] / "d")
        folders[-1].mkdir()
    (folders[-1] / "x.jpg").write_bytes(b"")
    try:
        found = list(iter_image_paths([str(root)]))
    finally:  # rmtree recurses too: take the folders down one by one
        (folders[-1] / "x.jpg").unlink()
        for folder in reversed(folders[1:]):
            folder.rmdir()
    assert found == [str(root / "a.jpg"), str(folders[-1] / "x.jpg"), str(root / "self")]



@pytest.mark.slow
def test_a_run_with_nothing_to_decode_ends_cleanly(tmp_path, top_weights, runtime_ready):
    """The workers and the engine are still starting when an empty folder's run ends: a
    worker stopped mid-start printed a traceback (its semaphores gone), and ONNX Runtime
    could abort the exit. It raced, so the run is repeated."""
    (tmp_path / "empty").mkdir()
    for _ in range(4):
        done = subprocess.run([sys.executable, "-m", "irv2cli", "predict",
                               str(tmp_path / "empty"), "--weights", str(top_weights)],
                              capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, done.stderr
        assert done.stderr.splitlines() == ["0 classified, 0 failed in 0.0 s (0.00 img/s)"]


def test_a_worker_stopped_while_it_starts_prints_nothing(tmp_path, monkeypatch):
    """A pool stopped while a worker starts unlinks the semaphores that worker is about to
    open (pebble stops its workers after that): the worker's traceback, printed before it
    can be stopped, must not reach the terminal. Here the first worker starts at once and
    takes both start-up tasks while the second starts late, deaf to SIGTERM meanwhile, so
    it always loses that race."""
    monkeypatch.setenv("IRV2_TEST_SLOW_START", f"1.5 {tmp_path / 'first'}")
    script = ("import time\n"
              "from irv2cli.inputs.decoding import DecodePool\n"
              "pool = DecodePool(2)\n"
              "time.sleep(1)\n"  # the first worker has started
              "pool.close()\n")
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 0
    assert done.stderr == ""
