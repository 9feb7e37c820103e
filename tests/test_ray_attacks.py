"""``--runner ray`` against a hostile world: misbehaving decoders, a driver stopped or
killed mid-run, shard folders that hold what they should not, and the mistakes users
make. Every run is a real process on a real Ray instance (a local one, started by the
run, or the session's cluster), and every Ray process a test starts is ended by that
test."""

from __future__ import annotations

import fcntl
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from ray_cluster import (
    HEAD_IP,
    marked,
    marked_with,
    processes,
    ray_environment,
    two_node_cluster,
)
from support import copies, numbered
from test_hostile_files import assert_every_hostile_file_once, hostile_folder
from test_ray_runner import by_path, irv2, jsonl_records, shard_records

from irv2cli.cli.main import cli

pytestmark = pytest.mark.ray

SAMPLES = Path(__file__).parent.parent / "samples"
# A node's agents wait for its dead control store before they exit (up to a minute);
# nothing else of an instance outlives its driver.
SLOW_TO_GO = ("ray::DashboardAgent", "ray::RuntimeEnvAgent")


@pytest.fixture
def env(runtime_ready, tmp_path) -> dict[str, str]:
    """The environment of an irv2 run that starts its own local Ray instance, whose cache
    already holds the artifact; marked, so that every process started with it is ended
    afterwards."""
    with marked(ray_environment()) as marked_env:
        yield marked_env


@pytest.fixture
def on_cluster(ray_cluster, runtime_ready) -> dict[str, str]:
    """The environment of an irv2 run on the session's cluster (whose decoders load the
    misbehaving test decoder)."""
    return {**ray_environment(), "RAY_ADDRESS": ray_cluster}


def start(*args, env: dict[str, str]) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "irv2cli", *map(str, args)], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def ray_processes(env: dict[str, str]) -> list[str]:
    """The command lines of the Ray processes started with ``env`` still running: its
    control store, its raylet, and the workers and agents (named ``ray::...``)."""
    mine = set(marked_with(env["IRV2_TEST_MARK"]))
    return [p.command for p in processes() if p.pid in mine and (
        p.command.startswith("ray::") or
        Path(p.command.split(" ")[0]).name in ("raylet", "gcs_server"))]


def held(folder: Path) -> bool:
    """Whether a run holds ``folder`` (its lock on the folder is taken)."""
    if not folder.is_dir():
        return False
    fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)  # and with it a lock this took
    return False


def wait_for(condition, process: subprocess.Popen, what: str) -> None:
    while not condition():
        assert process.poll() is None, f"the run ended before {what}"
        time.sleep(0.1)


def test_a_hostile_folder_on_ray_gives_the_records_of_the_local_runner(on_cluster,
                                                                      top_weights, tmp_path):
    folder = hostile_folder(tmp_path / "hostile", SAMPLES)
    output = tmp_path / "ray.jsonl"
    done = irv2("predict", folder, "--weights", top_weights, "-o", output, "--runner", "ray",
                "--batch-size", "3", "--decode-memory", "256MiB", "--decode-timeout", "2",
                "--verbose", env=on_cluster)

    assert done.returncode == 1, done.stderr
    records = {Path(path).name: record for path, record in
               by_path(jsonl_records(output)).items()}
    assert_every_hostile_file_once(records, done.stderr, folder)
    # --verbose: the stages' plan, and Ray Data's own progress
    assert "Ray plan: 2 engine actors (0.5 CPU each)" in done.stderr
    assert "Total Progress" in done.stderr


@pytest.mark.parametrize("signum, status", [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_a_stopped_driver_says_how_to_resume_as_locally(on_cluster, top_weights, tmp_path,
                                                        signum, status):
    """``ray.init`` puts a C++ SIGTERM handler in place that printed a stack trace and
    aborted (status -6): the driver keeps its own."""
    folder = copies(SAMPLES / "chelsea.jpg", tmp_path / "photos", numbered(96))
    output = tmp_path / "out.jsonl"
    run = start("predict", folder, "--weights", top_weights, "-o", output,
                "--runner", "ray", env=on_cluster)  # three blocks of 32: it stops mid-run
    wait_for(lambda: output.exists() and output.stat().st_size, run, "any record")
    run.send_signal(signum)
    stderr = run.communicate(timeout=120)[1].decode(errors="replace")

    assert run.returncode == status, stderr
    assert "Interrupted" in stderr and "--resume" in stderr
    assert "Traceback" not in stderr and "received at time" not in stderr


def test_a_killed_driver_takes_its_local_instance_along_and_resume_finishes(
        env, on_cluster, top_weights, tmp_path):
    """Killed mid-run, the driver's local Ray instance goes with it, and a resume (on the
    session's cluster) does every image not yet written, each once."""
    # records reach the driver in blocks of 32: three blocks, so the kill comes mid-run
    folder = copies(SAMPLES / "chelsea.jpg", tmp_path / "photos", numbered(96))
    output = tmp_path / "out.jsonl"
    command = ("predict", folder, "--weights", top_weights, "-o", output, "--runner", "ray")
    run = start(*command, env=env)
    wait_for(lambda: output.exists() and output.stat().st_size, run, "any record")
    run.kill()
    run.wait()
    written = len(output.read_bytes().splitlines())
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and [p for p in ray_processes(env)
                                           if not p.startswith(SLOW_TO_GO)]:
        time.sleep(0.5)
    left = [p for p in ray_processes(env) if not p.startswith(SLOW_TO_GO)]
    resumed = irv2(*command, "--resume", env=on_cluster)  # the local instance is gone

    assert left == []
    assert 0 < written < 96
    assert f"{written} already in" in resumed.stderr
    assert sorted(Path(p).name for p in by_path(jsonl_records(output))) == numbered(96)


def test_a_foreign_file_stays_and_a_damaged_shard_stops_a_resume(on_cluster, top_weights,
                                                                  tmp_path):
    folder = copies(SAMPLES / "coffee.jpg", tmp_path / "photos", numbered(3))
    shards = tmp_path / "shards"
    first = irv2("predict", folder, "--weights", top_weights, "-o", f"{shards}/",
                 "--runner", "ray", env=on_cluster)
    (shards / "notes.txt").write_text("mine")
    overwritten = irv2("predict", folder, "--weights", top_weights, "-o", shards,
                       "--runner", "ray", "--overwrite", env=on_cluster)
    names = sorted(Path(p).name for p in by_path(shard_records(shards)))
    (shards / "part-0123456789ab-000000.parquet").write_bytes(b"not parquet")
    damaged = irv2("predict", folder, "--weights", top_weights, "-o", shards,
                   "--runner", "ray", "--resume", env=on_cluster, check=False)

    assert "3 classified" in first.stderr and "3 classified" in overwritten.stderr
    assert names == numbered(3)  # the first run's shard is gone, only its own is there
    assert (shards / "notes.txt").read_text() == "mine"
    assert damaged.returncode == 1
    assert "part-0123456789ab-000000.parquet: not a shard written by irv2" in damaged.stderr
    assert "move it away before resuming" in damaged.stderr
    assert "Traceback" not in damaged.stderr


def test_shards_written_into_the_input_folder_are_not_read_as_inputs(on_cluster,
                                                                       top_weights, tmp_path):
    folder = copies(SAMPLES / "coffee.jpg", tmp_path / "photos", numbered(3))
    first = irv2("predict", folder, "--weights", top_weights, "-o", folder, "--runner", "ray",
                 env=on_cluster)
    again = irv2("predict", folder, "--weights", top_weights, "-o", folder, "--runner", "ray",
                 "--resume", env=on_cluster)

    assert "3 classified, 0 failed" in first.stderr
    assert "0 classified, 0 failed" in again.stderr  # the shard is not an input
    assert "3 already in" in again.stderr
    assert sorted(Path(p).name for p in by_path(shard_records(folder))) == numbered(3)


def test_notop_weights_that_cannot_classify_are_the_one_line_weights_error(
        on_cluster, notop_weights, tmp_path):
    done = irv2("predict", SAMPLES, "--weights", notop_weights, "-o", tmp_path / "out.jsonl",
                "--runner", "ray", env=on_cluster, check=False)

    assert done.returncode == 1
    assert "these are feature-extractor (notop) weights" in done.stderr
    assert "Traceback" not in done.stderr and "RayTaskError" not in done.stderr


@pytest.mark.parametrize("given, status, says", [("missing", 1, "0 classified, 1 failed"),
                                                 ("empty", 0, "0 classified, 0 failed")])
def test_an_input_with_nothing_to_classify_on_ray_is_said_as_locally(on_cluster,
                                                                     top_weights, tmp_path,
                                                                     given, status, says):
    (tmp_path / "empty").mkdir()
    done = irv2("predict", tmp_path / given, "--weights", top_weights, "-o",
                f"{tmp_path / 'shards'}/", "--runner", "ray", env=on_cluster, check=False)

    assert done.returncode == status, done.stderr
    assert says in done.stderr
    assert "Traceback" not in done.stderr


def test_an_address_where_nothing_answers_is_one_line_at_once(mixed_folder, tmp_path):
    from click.testing import CliRunner
    from ray_cluster import free_port

    result = CliRunner().invoke(cli, ["predict", str(mixed_folder), "--runner", "ray",
                                      "--ray-address", f"127.0.0.2:{free_port()}",
                                      "-o", str(tmp_path / "out.jsonl")])

    assert result.exit_code == 1
    assert "could not connect to the Ray cluster at 127.0.0.2:" in result.output
    assert "nothing answers there" in result.output
    assert "check --ray-address (or RAY_ADDRESS)" in result.output


def test_a_second_run_into_a_shard_folder_being_written_is_refused_at_once(
        on_cluster, top_weights, tmp_path):
    folder = copies(SAMPLES / "coffee.jpg", tmp_path / "photos", numbered(8))
    shards = tmp_path / "shards"
    first = start("predict", folder, "--weights", top_weights, "-o", f"{shards}/",
                  "--runner", "ray", env=on_cluster)
    wait_for(lambda: held(shards), first, "it held the shard folder")
    second = irv2("predict", folder, "--weights", top_weights, "-o", f"{shards}/", "--runner",
                  "ray", "--resume", env=on_cluster, check=False)
    stderr = first.communicate(timeout=300)[1].decode(errors="replace")

    assert second.returncode == 1
    assert f"{shards}/ is being written by another irv2 run: wait for it" in second.stderr
    assert "Traceback" not in second.stderr
    assert first.returncode == 0, stderr
    assert sorted(Path(p).name for p in by_path(shard_records(shards))) == numbered(8)


def test_a_shard_folder_that_cannot_be_made_is_one_line(mixed_folder, tmp_path):
    from click.testing import CliRunner

    (tmp_path / "file").write_text("")
    result = CliRunner().invoke(cli, ["predict", str(mixed_folder), "--runner", "ray",
                                      "-o", f"{tmp_path / 'file' / 'shards'}/"])

    assert result.exit_code == 1
    assert "cannot make the output folder" in result.output
    assert "Traceback" not in result.output


def test_a_node_that_cannot_run_irv2_is_named_in_one_line_at_once(mixed_folder, top_weights,
                                                                   tmp_path):
    """A node without irv2cli (here a broken copy shadows it) fails every actor placed on
    it, again and again: the run names it before it starts instead."""
    shadow = tmp_path / "shadow" / "irv2cli"
    shadow.mkdir(parents=True)
    (shadow / "__init__.py").write_text('raise ImportError("no irv2cli on this node")\n')
    with two_node_cluster(ray_environment(PYTHONPATH=str(shadow.parent)), nodes=1) as address:
        started = time.monotonic()
        result = subprocess.run(  # from a folder Ray would not put on its workers' path
            [sys.executable, "-m", "irv2cli", "predict", str(mixed_folder), "--weights",
             str(top_weights), "-o", str(tmp_path / "out.jsonl"), "--runner", "ray"],
            env={**ray_environment(), "RAY_ADDRESS": address}, cwd=tmp_path,
            capture_output=True, text=True, timeout=120)
        took = time.monotonic() - started

    assert result.returncode == 1, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, lines
    assert lines[0].startswith(f"Error: the Ray node at {HEAD_IP} cannot run irv2's stages: "
                               "ImportError: no irv2cli on this node; install this "
                               "machine's irv2cli"), lines[0]
    assert took < 10
    assert not (tmp_path / "out.jsonl").exists()
