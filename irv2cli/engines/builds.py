"""Building a runtime artifact, the one sequence for the fp32 artifact and the int8 one:
under the artifact's lock (its caller holds it), whatever lies at its place is removed,
a child process (``python -m irv2cli.export.artifact``, which needs TensorFlow) builds
it in a scratch folder beside it, and it is installed only once whole (see
``store.artifacts``).

The child can be stopped at once: it is killed if this program is interrupted, and a
program that ends waits for the children it stopped, so none outlives it.
"""

from __future__ import annotations

import atexit
import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np

from ..errors import EngineError, Hint, WeightsError
from ..store import artifacts
from ..store.locks import POLL_S, Notify, cache_lock, check_abandoned

BUILD_CHILD = "irv2cli.export.artifact"  # run as a module, so this one never imports it
FP32_BUILD = "building the fast runtime for these weights (once; about half a minute)..."
INT8_BUILD = ("building the int8 runtime for these weights (half a minute, plus the "
              "calibration images through the network)...")

_running: set[subprocess.Popen] = set()  # build children not yet ended


def build_lock(target: Path, what: str, notify: Notify):
    """Hold ``target``'s lock, which its builders take turns on; ``notify`` hears, once, if
    another process building ``what`` holds it (see ``store.locks.cache_lock``)."""
    return cache_lock(artifacts.lock_path(target), f"another irv2 process building {what}",
                      notify)


def build_artifact(weights: Path, target: Path, notify: Notify,
                   calibration: np.ndarray | None = None,
                   vouch: Callable[[Path], None] = lambda built: None) -> None:
    """Under ``target``'s lock: replace whatever lies at ``target`` with the artifact for
    ``weights``, int8 if ``calibration`` pixels (N, 299, 299, 3) uint8 are given.
    ``vouch(built)`` may check the built artifact and write what lies beside it before it
    is installed (the int8 report). ``notify`` hears when the build proper begins."""
    artifacts.remove_leftovers(target)
    with artifacts.build_folder(target) as scratch:
        saved = None
        if calibration is not None:
            saved = scratch / "calibration.npy"
            np.save(saved, calibration)
        built = run_build_child(weights, scratch / target.name, notify, saved)
        vouch(built)
        artifacts.install(built, target, scratch)


def run_build_child(weights: Path, built: Path, notify: Notify,
                    calibration: Path | None = None) -> Path:
    """Build the artifact in a child process writing ``built`` (named as the artifact will
    be, since the graph names its data file) in a scratch folder; the int8 one with the
    images saved in ``calibration``. ``notify`` hears when the weights are accepted and
    the build begins. The child is killed if this program is interrupted or ends
    meanwhile."""
    refusal, log = built.with_name("refusal.txt"), built.with_name("log")
    extra = [] if calibration is None else [str(calibration)]
    with open(log, "wb") as log_file:
        child = subprocess.Popen(
            [sys.executable, "-m", BUILD_CHILD, str(weights), str(built), str(refusal), *extra],
            stdin=subprocess.PIPE, stdout=log_file, stderr=subprocess.STDOUT)
    _running.add(child)
    try:
        _wait(child, artifacts.started_marker(built), notify,
              FP32_BUILD if calibration is None else INT8_BUILD)
    finally:
        _stop(child)
    if refusal.exists():
        raise _refused(refusal)
    if child.returncode != 0:
        tail = " | ".join(log.read_text(errors="replace").strip().splitlines()[-3:])
        raise EngineError(
            f"building the fast runtime for {weights} failed (exit status "
            f"{child.returncode}); the reference Keras backend does not need it. "
            f"The build's last words: {tail}")
    return built


def _stop(child: subprocess.Popen) -> None:
    """Kill ``child`` if it still runs, and wait for it to end."""
    if child.poll() is None:
        child.kill()
        child.wait()
    child.stdin.close()
    _running.discard(child)


@atexit.register
def _stop_running_children() -> None:
    """At the program's end (an interrupted build's thread may never resume), stop every
    build child still running and wait for it, so that none outlives the program."""
    for child in list(_running):
        _stop(child)


def _refused(refusal: Path) -> WeightsError:
    """The build child's ``WeightsError``, as it recorded it (see ``export.artifact``)."""
    record = json.loads(refusal.read_text())
    hint = record["hint"]
    return WeightsError(record["message"], Hint[hint] if hint else None)


def _wait(child: subprocess.Popen, started: Path, notify: Notify, building: str) -> None:
    """Wait for ``child``, saying ``building`` once when ``started`` appears.
    Ctrl-C interrupts the wait, and so does the program's end."""
    said = False
    while True:
        try:
            child.wait(timeout=POLL_S)
            return
        except subprocess.TimeoutExpired:
            check_abandoned()
        if not said and started.exists():
            notify(building)
            said = True
