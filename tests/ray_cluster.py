"""Real Ray for the tests: a two-node cluster on loopback addresses, the environment every
Ray process needs here, and a look at which processes run which stage.

Every Ray process talks on 127.0.0.2 (the head, and a local instance) or 127.0.0.3 (the
second node), never on this machine's other address: Ray would otherwise pick that one.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

HEAD_IP, WORKER_IP = "127.0.0.2", "127.0.0.3"
RAY = str(Path(sys.executable).parent / "ray")
INFER_TITLE = "ray::MapWorker(MapBatches(Infer))"


def ray_environment(**extra: str) -> dict[str, str]:
    """This process's environment for a Ray process: token authentication (``ray start``
    turns it on), the loopback address irv2 gives Ray, and ``extra``."""
    env = {**os.environ, "RAY_AUTH_MODE": "token", "IRV2_RAY_NODE_IP": HEAD_IP,
           "RAY_USAGE_STATS_ENABLED": "0", **extra}
    env.pop("RAY_ADDRESS", None)
    return env


def free_port(host: str = HEAD_IP) -> int:
    with socket.socket() as probe:
        probe.bind((host, 0))
        return probe.getsockname()[1]


@contextlib.contextmanager
def two_node_cluster(env: dict[str, str], nodes: int = 2) -> Iterator[str]:
    """A head on 127.0.0.2 and (with ``nodes=2``) a second node on 127.0.0.3, one CPU
    each (small machines: the stages must be planned to fit them), started with ``env``
    (what their workers inherit); the head's address. Its processes, and only they, are
    stopped afterwards."""
    port = free_port()
    common = ["--num-cpus=1", "--disable-usage-stats"]
    with marked(env) as env:
        subprocess.run([RAY, "start", "--head", f"--node-ip-address={HEAD_IP}",
                        f"--port={port}", "--include-dashboard=false", *common],
                       env=env, check=True, capture_output=True)
        if nodes == 2:
            subprocess.run([RAY, "start", f"--address={HEAD_IP}:{port}",
                            f"--node-ip-address={WORKER_IP}", *common],
                           env=env, check=True, capture_output=True)
        yield f"{HEAD_IP}:{port}"


MARK = "IRV2_TEST_MARK"


@contextlib.contextmanager
def marked(env: dict[str, str]) -> Iterator[dict[str, str]]:
    """``env`` with a mark of its own that every process started with it passes on to
    its children (Ray's daemons and workers too); those processes are ended afterwards.
    (``ray stop`` would end every Ray process of this machine, other people's too.)"""
    mark = uuid.uuid4().hex
    try:
        yield {**env, MARK: mark}
    finally:
        end_marked(mark)


def marked_with(mark: str) -> list[int]:
    """The live processes whose environment holds ``mark``."""
    needle = f"{MARK}={mark}".encode()
    found = []
    for entry in Path("/proc").iterdir():
        try:
            if entry.name.isdigit() and needle in (entry / "environ").read_bytes().split(b"\0"):
                found.append(int(entry.name))
        except OSError:
            continue
    return found


def end_marked(mark: str, patience: float = 2.0) -> None:
    """Ask the processes holding ``mark`` to stop, then kill those still there."""
    for signum in (signal.SIGTERM, signal.SIGKILL):
        for pid in marked_with(mark):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signum)
        deadline = time.monotonic() + patience
        while marked_with(mark) and time.monotonic() < deadline:
            time.sleep(0.2)


@dataclass(frozen=True)
class Process:
    pid: int
    parent: int
    command: str


def processes() -> list[Process]:
    """Every process of this machine, with its parent and command line."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            command = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(
                errors="replace").strip()
            parent = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        found.append(Process(int(entry.name), parent, command))
    return found


def inference_actors() -> list[Process]:
    """The processes running irv2's inference stage now."""
    return [p for p in processes() if p.command.startswith(INFER_TITLE)]


def node_of(process: Process) -> str | None:
    """The address of the Ray node whose raylet started ``process``."""
    parents = {p.pid: p for p in processes()}
    raylet = parents.get(process.parent)
    if raylet is None:
        return None
    for part in raylet.command.split():
        if part.startswith("--node_ip_address="):
            return part.split("=", 1)[1]
    return None
