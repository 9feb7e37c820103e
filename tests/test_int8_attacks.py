"""``irv2 quantize`` attacked: killed (SIGKILL) or interrupted (Ctrl-C) in the middle of
its build, and run twice at once. No damaged int8 artifact is ever left to be used, and
the next run works.

Every test starts ``python -m irv2cli quantize`` as a user would and sends it real signals.
"""

from __future__ import annotations

import signal
import time
from pathlib import Path

import pytest
from support import Irv2Process, build_children

from irv2cli.engines.int8 import int8_artifact_path, open_int8_engine
from irv2cli.errors import EngineError
from irv2cli.pipeline.quantize import quantize

pytestmark = [pytest.mark.skipif(not Path("/proc/self/cmdline").exists(),
                                 reason="POSIX signals and /proc (Linux) are needed"),
              pytest.mark.slow]  # every test starts a process

BUILDING = "building the int8 runtime for these weights"  # not "waiting for ... building"


def wait_for_no_build(weights: Path, timeout: float = 60) -> None:
    """Return once no process builds a runtime for ``weights``."""
    deadline = time.monotonic() + timeout
    while build_children(weights):
        assert time.monotonic() < deadline, "a build child outlived its parent"
        time.sleep(0.1)


def int8_files(runtime: Path) -> list[str]:
    """What the runtime folder holds of the int8 artifact, bar its lock."""
    return sorted(p.name for p in runtime.iterdir()
                  if "-int8.onnx" in p.name and not p.name.endswith(".lock"))


@pytest.mark.parametrize(("signum", "status"), [(signal.SIGKILL, -9), (signal.SIGINT, 130)],
                         ids=["SIGKILL", "Ctrl-C"])
def test_a_build_stopped_midway_leaves_no_artifact_and_the_next_run_works(
        cache, top_weights, calibration_images, int8_builds, signum, status):
    run = Irv2Process("quantize", "--calibrate", calibration_images, "--weights", top_weights)
    run.wait_until(lambda: BUILDING in run.stderr)
    run.wait_until(lambda: bool(build_children(top_weights)))
    time.sleep(1.0)  # well into the build
    run.stop(signum)
    assert run.process.returncode == status
    assert "Traceback" not in run.stderr
    wait_for_no_build(top_weights)
    runtime = cache.irv2 / "runtime"
    target = int8_artifact_path(top_weights)
    left = int8_files(runtime)
    # Ctrl-C cleans up after itself; a killed build leaves only its scratch folder
    assert left == [] if signum == signal.SIGINT else all(n.startswith(".build-") for n in left)
    with pytest.raises(EngineError, match="no int8 runtime"):
        open_int8_engine(target)

    done = quantize(calibration_images, weights=top_weights)  # the next run
    assert done.built and int8_builds == [8]
    assert int8_files(runtime) == [target.name, f"{target.name}.data",
                                   f"{target.name}.report.json",
                                   f"{target.name}.xxh3"]  # and no scratch folder
    assert open_int8_engine(target).report.calibration_images == 8


def test_two_runs_at_once_build_it_once_and_both_succeed(cache, top_weights,
                                                         calibration_images):
    runs = [Irv2Process("quantize", "--calibrate", calibration_images,
                        "--weights", top_weights) for _ in range(2)]
    for run in runs:
        assert run.wait() == 0, run.stderr
    said = sorted(BUILDING in run.stderr for run in runs)
    assert said == [False, True]  # one built it; the other waited, then found it built
    waited = next(run for run in runs if BUILDING not in run.stderr)
    assert "waiting for another irv2 process building the int8 runtime" in waited.stderr
    engine = open_int8_engine(int8_artifact_path(top_weights))
    assert engine.report.calibration_images == 8 and engine.report.check is None
