"""Stopping: SIGTERM and SIGHUP end a run the way Ctrl-C does, and Ctrl-C is honoured at
once while the fast runtime is built or while another process holds a lock.

Every test starts ``python -m irv2cli`` as a user would and sends it real signals.
"""

from __future__ import annotations

import json
import signal
import time
from pathlib import Path

import pytest
from filelock import FileLock
from support import Irv2Process, build_children, copies, numbered

from irv2cli.spec import SPEC
from irv2cli.store.artifacts import artifact_path
from irv2cli.store.weights import cached_weights_path

pytestmark = [pytest.mark.skipif(not Path("/proc/self/cmdline").exists(),
                                 reason="POSIX signals and /proc (Linux) are needed"),
              pytest.mark.slow]  # every test starts a process

PROMPTLY_S = 5.0  # a build takes half a minute; a lock may be held for minutes


@pytest.fixture
def many_photos(tmp_path, samples) -> Path:
    return copies(samples / "coffee.jpg", tmp_path / "many", numbered(30))


@pytest.mark.parametrize(("signum", "status"), [(signal.SIGTERM, 143), (signal.SIGHUP, 129)],
                         ids=["SIGTERM", "SIGHUP"])
def test_sigterm_and_sighup_stop_a_run_like_ctrl_c(runtime_ready, top_weights, many_photos,
                                                   tmp_path, signum, status):
    out = tmp_path / "results.json"
    run = Irv2Process("predict", many_photos, "--weights", top_weights, "--output", out,
                      "--batch-size", "1")
    run.wait_until(lambda: out.exists() and out.read_text().count("\n") >= 3)
    run.stop(signum)
    assert run.process.returncode == status
    assert "--resume" in run.stderr and "Traceback" not in run.stderr
    records = json.loads(out.read_text())  # a complete, closed array
    assert 2 <= len(records) < 30
    assert all(r["error"] is None for r in records)


@pytest.mark.parametrize(("signum", "status"), [(signal.SIGINT, 130), (signal.SIGTERM, 143)],
                         ids=["Ctrl-C", "SIGTERM"])
def test_stopping_during_the_build_is_prompt_and_leaves_nothing_behind(
        cache, top_weights, samples, signum, status):
    run = Irv2Process("predict", samples / "coffee.jpg", "--weights", top_weights)
    run.wait_until(lambda: "building the fast runtime" in run.stderr)
    run.wait_until(lambda: bool(build_children(top_weights)))
    time.sleep(1.0)  # well into the build
    assert run.stop(signum) < PROMPTLY_S
    assert run.process.returncode == status
    assert "Traceback" not in run.stderr
    lock = f"{artifact_path(top_weights).name}.lock"
    assert [p.name for p in (cache.irv2 / "runtime").iterdir()] == [lock]
    assert build_children(top_weights) == []


def test_a_held_build_lock_is_announced_once_and_ctrl_c_ends_the_wait(cache, top_weights,
                                                                       samples):
    target = artifact_path(top_weights)
    target.parent.mkdir(parents=True)
    with FileLock(f"{target}.lock"):  # another process is building it
        run = Irv2Process("predict", samples / "coffee.jpg", "--weights", top_weights)
        run.wait_until(lambda: "waiting for another irv2 process building the fast runtime"
                       in run.stderr, timeout=60)
        time.sleep(1.0)
        assert run.stop(signal.SIGINT) < PROMPTLY_S
    assert run.process.returncode == 130
    assert run.stderr.count("waiting for") == 1 and str(target) in run.stderr


def test_a_held_download_lock_is_announced_and_ctrl_c_ends_the_wait(cache):
    target = cached_weights_path(SPEC.top_weights)
    target.parent.mkdir(parents=True)
    with FileLock(f"{target}.lock"):  # another process is downloading the weights
        run = Irv2Process("download-weights", "--mirror", "http://127.0.0.1:9/")
        run.wait_until(lambda: f"waiting for another irv2 process installing {target.name}"
                       in run.stderr, timeout=60)
        assert run.stop(signal.SIGINT) < PROMPTLY_S
    assert run.process.returncode == 130
    assert "Traceback" not in run.stderr and "Aborted" not in run.stderr
