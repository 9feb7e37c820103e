"""``--runner ray``: the same records as the local runner, from a real local Ray instance
and from the session's real two-node cluster on loopback, with faults (a killed
inference actor, a killed driver) costing time and never an image."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner
from ray_cluster import (
    HEAD_IP,
    WORKER_IP,
    inference_actors,
    node_of,
    ray_environment,
)
from support import copies, numbered

from irv2cli.cli.main import cli

pytestmark = pytest.mark.ray

SAMPLES = Path(__file__).parent.parent / "samples"
NOT_UTF8 = b"caf\xe9.jpg"  # a Latin-1 name: not UTF-8


def irv2(*args, env: dict[str, str], check: bool = True) -> subprocess.CompletedProcess:
    """``irv2 ARGS`` in a new process with ``env``."""
    result = subprocess.run([sys.executable, "-m", "irv2cli", *map(str, args)], env=env,
                            capture_output=True, text=True, errors="replace", timeout=600)
    if check:
        assert result.returncode in (0, 1), result.stderr
    return result


def start(*args, env: dict[str, str]) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "irv2cli", *map(str, args)], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def jsonl_records(path: Path) -> list[dict]:
    """The records of a JSONL results file, names exactly as written (not UTF-8 ones too)."""
    lines = path.read_bytes().splitlines()
    return [json.loads(line.decode("utf-8", "surrogateescape")) for line in lines]


def shard_records(folder: Path) -> list[dict]:
    """The records of a folder of Parquet shards, as dicts like JSONL's."""
    records = []
    for shard in sorted(folder.glob("part-*.parquet")):
        for row in pq.read_table(shard).to_pylist():
            raw = row.pop("path_bytes")
            if raw is not None:
                row["path"] = raw.decode("utf-8", "surrogateescape")
            records.append(row)
    return records


def by_path(records: list[dict]) -> dict[str, dict]:
    keyed = {record["path"]: record for record in records}
    assert len(keyed) == len(records), "an input has more than one record"
    return keyed


def assert_same_predictions(ours: list[dict], reference: list[dict]) -> None:
    """Same inputs, same errors, same top-k classes, scores within 1e-4."""
    ours, reference = by_path(ours), by_path(reference)
    assert ours.keys() == reference.keys()
    for path, expected in reference.items():
        got = ours[path]
        assert got["error"] == expected["error"], path
        assert ([p["index"] for p in got["predictions"] or []]
                == [p["index"] for p in expected["predictions"] or []]), path
        for mine, theirs in zip(got["predictions"] or [], expected["predictions"] or [],
                                strict=True):
            assert mine["score"] == pytest.approx(theirs["score"], abs=1e-4)


@pytest.fixture
def uncurated(mixed_folder) -> Path:
    """``mixed_folder`` plus a subfolder and a photo whose name is not UTF-8."""
    shutil.copytree(SAMPLES, mixed_folder / "sub", ignore=shutil.ignore_patterns("*.md"))
    Path(os.fsdecode(os.fsencode(mixed_folder) + b"/" + NOT_UTF8)).write_bytes(
        (SAMPLES / "rocket.jpg").read_bytes())
    return mixed_folder


@pytest.fixture
def env(runtime_ready) -> dict[str, str]:
    """The environment of an irv2 run whose cache already holds the artifact."""
    return ray_environment()


def test_a_local_ray_instance_gives_the_records_of_the_local_runner(uncurated, top_weights,
                                                                    env, tmp_path):
    local, on_ray = tmp_path / "local.jsonl", tmp_path / "ray.jsonl"
    irv2("predict", uncurated, "--weights", top_weights, "-o", local, env=env)
    result = irv2("predict", uncurated, "--weights", top_weights, "-o", on_ray,
                  "--runner", "ray", "--verbose", env=env)

    assert result.returncode == 1  # notes.jpg is not an image
    assert_same_predictions(jsonl_records(on_ray), jsonl_records(local))
    assert "Started a local Ray instance" in result.stderr  # Ray's words, with --verbose
    assert "7 classified, 1 failed" in result.stderr


def test_a_head_on_the_cluster_gives_the_records_of_the_local_runner(
        mixed_folder, top_weights, cluster_env, tmp_path):
    from pictures import random_head

    head = random_head(tmp_path / "h.head", top_weights, ("cat", "coffee", "rocket"))
    local, on_ray = tmp_path / "local.jsonl", tmp_path / "ray.jsonl"
    CliRunner().invoke(cli, ["predict", str(mixed_folder), "--weights", str(top_weights),
                             "--head", str(head), "-o", str(local)], catch_exceptions=False)
    irv2("predict", mixed_folder, "--weights", top_weights, "--head", head, "-o", on_ray,
         "--runner", "ray", env=cluster_env)
    assert_same_predictions(jsonl_records(on_ray), jsonl_records(local))
    labels = {p["label"] for r in jsonl_records(on_ray) for p in r["predictions"] or []}
    assert labels == {"cat", "coffee", "rocket"}


def test_train_on_the_cluster_fits_the_head_of_the_local_runner(top_weights, cluster_env,
                                                                  cache, tmp_path):
    from pictures import split_folders

    from irv2cli.results.heads import load_head

    data = split_folders(tmp_path / "data")
    local, on_ray = tmp_path / "local.head", tmp_path / "ray.head"
    irv2("train", data, "--weights", top_weights, "-o", local, env=cluster_env)
    shutil.rmtree(cache.irv2 / "features")  # the cluster embeds every picture again
    result = irv2("train", data, "--weights", top_weights, "-o", on_ray, "--runner", "ray",
                  env=cluster_env)

    assert result.returncode == 0, result.stderr
    assert "validation (6 images): top-1 100.0%" in result.stdout
    ours, reference = load_head(on_ray), load_head(local)
    assert ours.classes == reference.classes
    assert ours.metadata["training"]["C"] == reference.metadata["training"]["C"]
    np.testing.assert_allclose(ours.bias, reference.bias, atol=1e-3)
    np.testing.assert_allclose(ours.weights, reference.weights,
                               atol=1e-3 * np.abs(reference.weights).max())


@pytest.fixture
def cluster_env(ray_cluster, env) -> dict[str, str]:
    """The environment of an irv2 run on the session's cluster."""
    return {**env, "RAY_ADDRESS": ray_cluster}


def test_embed_on_a_cluster_gives_the_features_of_the_local_runner(
        uncurated, top_weights, cluster_env, tmp_path):
    local, on_ray = tmp_path / "local.parquet", tmp_path / "ray.parquet"
    irv2("embed", uncurated, "--weights", top_weights, "-o", local, env=cluster_env)
    irv2("embed", uncurated, "--weights", top_weights, "-o", on_ray, "--runner", "ray",
         env=cluster_env)

    def features(path: Path) -> dict[str, tuple]:
        rows = pq.read_table(path).to_pylist()
        return {(row["path_bytes"] or row["path"].encode()): (row["error"], row["features"])
                for row in rows}

    ours, reference = features(on_ray), features(local)
    assert ours.keys() == reference.keys() and len(ours) == 8
    for name, (error, vector) in reference.items():
        assert ours[name][0] == error
        if vector is None:
            assert ours[name][1] is None
        else:
            assert ours[name][1] == pytest.approx(vector, abs=1e-4)


def test_two_nodes_of_one_cpu_write_shards_with_an_actor_on_each_node(
        uncurated, top_weights, cluster_env, tmp_path):
    reference = tmp_path / "local.jsonl"
    irv2("predict", uncurated, "--weights", top_weights, "-o", reference, env=cluster_env)
    shards = tmp_path / "shards"
    run = start("predict", uncurated, "--weights", top_weights, "-o", f"{shards}/",
                "--runner", "ray", "--actors", "2", env=cluster_env)
    nodes = set()
    while run.poll() is None:
        nodes |= {node_of(actor) for actor in inference_actors()}
        time.sleep(0.2)
    stderr = run.stderr.read().decode(errors="replace")

    assert run.returncode == 1, stderr
    assert nodes == {HEAD_IP, WORKER_IP}
    assert_same_predictions(shard_records(shards), jsonl_records(reference))


def test_a_plan_that_does_not_fit_the_cluster_is_one_line_at_once(mixed_folder, top_weights,
                                                                  cluster_env, tmp_path):
    """Two nodes of one CPU hold at most three engines beside a decoder and the listing:
    four once meant a wait without end."""
    started = time.monotonic()
    result = irv2("predict", mixed_folder, "--weights", top_weights, "-o",
                  tmp_path / "out.jsonl", "--runner", "ray", "--actors", "4",
                  env=cluster_env, check=False)

    assert time.monotonic() - started < 10
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == [
        "Error: 4 engine actors do not fit the Ray cluster's 2 nodes of 1 CPU: each reserves "
        "0.5 CPU, and with a decoder and the listing at most 3 fit; pass fewer --actors or "
        "--workers, or give the cluster more CPUs (`ray start --num-cpus N` on more nodes)."]
    assert not (tmp_path / "out.jsonl").exists()


def test_stderr_off_a_terminal_holds_irv2s_lines_and_not_rays(top_weights, cluster_env,
                                                              tmp_path):
    """Ray Data's progress blocks and log lines stay in Ray's logs (``--verbose`` shows
    them, and the stages' plan: see the hostile folder's test)."""
    folder = copies(SAMPLES / "chelsea.jpg", tmp_path / "photos", numbered(3))
    result = irv2("predict", folder, "--weights", top_weights, "-o", tmp_path / "out.jsonl",
                  "--runner", "ray", env=cluster_env)

    assert result.returncode == 0, result.stderr
    lines = [line for line in result.stderr.splitlines()
             if "core_worker.cc" not in line]  # Ray's C++ core warns of restartable actors
    assert len(lines) == 1 and lines[0].startswith("3 classified, 0 failed in "), lines


def test_resume_of_a_shard_folder_adds_only_the_missing_images(uncurated, top_weights,
                                                              cluster_env, tmp_path):
    shards = f"{tmp_path / 'shards'}/"
    first = irv2("predict", uncurated / "sub", "--weights", top_weights, "-o", shards,
                 "--runner", "ray", env=cluster_env)
    refused = irv2("predict", uncurated, "--weights", top_weights, "-o", shards,
                   "--runner", "ray", env=cluster_env)
    resumed = irv2("predict", uncurated, "--weights", top_weights, "-o", shards,
                   "--runner", "ray", "--resume", env=cluster_env)

    assert "4 classified, 0 failed" in first.stderr
    assert refused.returncode == 1
    assert "already holds the shards of an earlier run" in refused.stderr
    assert "pass --resume to continue that run, or --overwrite" in refused.stderr
    assert "3 classified, 1 failed" in resumed.stderr and "4 already in" in resumed.stderr
    assert len(by_path(shard_records(tmp_path / "shards"))) == 8


def test_a_killed_inference_actor_costs_no_image(top_weights, cluster_env, tmp_path):
    folder = copies(SAMPLES / "coffee.jpg", tmp_path / "photos", numbered(40))
    output = tmp_path / "out.jsonl"
    earlier = {actor.pid for actor in inference_actors()}  # other runs' on this cluster
    run = start("predict", folder, "--weights", top_weights, "-o", output, "--runner", "ray",
                "--batch-size", "2", "--actors", "1", env=cluster_env)
    killed = None
    while run.poll() is None and killed is None:
        actors = [actor for actor in inference_actors() if actor.pid not in earlier]
        if actors and output.exists() and output.stat().st_size:
            os.kill(actors[0].pid, signal.SIGKILL)  # mid-run: some records are written
            killed = actors[0].pid
        time.sleep(0.1)
    stderr = run.communicate()[1].decode(errors="replace")

    assert killed is not None, "the run ended before an actor could be killed"
    assert run.returncode == 0, stderr
    records = by_path(jsonl_records(output))
    assert sorted(Path(p).name for p in records) == numbered(40)
    assert all(record["error"] is None for record in records.values())


def s3_shard_records(uri: str) -> list[dict]:
    """The records of the shards under ``uri``, read from the S3 server."""
    from pyarrow import fs

    filesystem, folder = fs.FileSystem.from_uri(uri)
    shards = filesystem.get_file_info(fs.FileSelector(folder))
    assert shards, f"no shards under {uri}"
    return [row for shard in sorted(info.path for info in shards)
            for row in pq.read_table(shard, filesystem=filesystem).to_pylist()]


def test_photos_in_s3_become_shards_in_s3(s3, mixed_folder, top_weights, ray_cluster,
                                          runtime_ready, tmp_path):
    env = {**ray_environment(), "RAY_ADDRESS": ray_cluster}  # the s3 fixture's credentials
    s3.upload(mixed_folder, "photos")
    reference = tmp_path / "local.jsonl"
    irv2("predict", mixed_folder, "--weights", top_weights, "-o", reference, env=env)
    result = irv2("predict", s3.uri("photos/"), "--weights", top_weights,
                  "-o", s3.uri("run/"), "--runner", "ray", env=env)

    assert "2 classified, 1 failed" in result.stderr
    rows = by_path(s3_shard_records(s3.uri("run/")))
    for expected in jsonl_records(reference):
        name = Path(expected["path"]).name
        got = rows.pop(s3.uri(f"photos/{name}"))
        if expected["error"] is None:
            assert [p["index"] for p in got["predictions"]] == [
                p["index"] for p in expected["predictions"]]
        else:
            assert "not an image Pillow can read" in got["error"]
    assert not rows


def test_without_ray_the_ray_runner_says_how_to_install_it(mixed_folder, monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)  # as if not installed
    result = CliRunner().invoke(cli, ["predict", str(mixed_folder), "--runner", "ray"])

    assert result.exit_code == 1
    assert "the Ray runner needs Ray Data, which is not installed" in result.output
    assert "install it with `pip install 'irv2cli[ray]'`" in result.output


@pytest.mark.parametrize("arguments, complaint", [
    (["-o", "{tmp}/"], "only --runner ray writes folders"),
    (["-o", "s3://bucket/run/"], "only --runner ray writes folders"),
    (["-o", "{tmp}/", "--runner", "ray", "--format", "csv"], "--format csv does not apply"),
    (["--report", "{tmp}/r.html", "--runner", "ray"], "--report needs --runner local"),
])
def test_what_only_one_runner_does_is_a_usage_error(mixed_folder, tmp_path, arguments,
                                                    complaint):
    arguments = [a.replace("{tmp}", str(tmp_path)) for a in arguments]
    result = CliRunner().invoke(cli, ["predict", str(mixed_folder), *arguments])

    assert result.exit_code == 2
    assert complaint in result.output
