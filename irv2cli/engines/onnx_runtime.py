"""The fast runtime: the network exported once to ONNX and run by ONNX Runtime.

The artifact lives in the cache beside the weights, keyed by the weights' hash, the
input size, this package's version, the ONNX Runtime version and the CPU, so a stale
one is never used. It is stored already optimised by ONNX Runtime for this machine
(``optimized_model_filepath``), so a later session loads it with optimisation off:
that takes a fraction of a second instead of one. Building it needs TensorFlow, so it
runs in a child process that can be stopped at once; running it does not import
TensorFlow at all.

Beside the artifact ``NAME.onnx`` lies ``NAME.onnx.xxh3``, its xxh3_128 checksum,
written only after the artifact is durably in place: an artifact without a matching
checksum (damaged, truncated, half-written, or something else at its path) is never
loaded but rebuilt.
"""

from __future__ import annotations

import hashlib
import os
import platform
import shutil
import stat
import subprocess
import sys
import tempfile
import threading
from collections.abc import Callable
from functools import cache
from pathlib import Path

import numpy as np
import onnxruntime as ort
import xxhash
from filelock import FileLock, Timeout
from onnxruntime.capi.onnxruntime_pybind11_state import (
    Fail,
    InvalidArgument,
    InvalidGraph,
    InvalidProtobuf,
    NoSuchFile,
)

from ..errors import EngineError, WeightsError
from ..spec import SPEC
from ..store.atomic import place
from ..store.locks import POLL_S, cache_lock, check_abandoned
from ..store.weights import cache_dir, official_file
from ..version import __version__

LOAD_ERRORS = (Fail, InvalidArgument, InvalidGraph, InvalidProtobuf, NoSuchFile)
Notify = Callable[[str], None]

CHECKSUM = "xxh3_128"
READ_CHUNK = 256 * 1024
BUILD_CHILD = "from irv2cli.engines.onnx_runtime import build_child_main; build_child_main()"


@cache
def machine_fingerprint() -> str:
    """What the optimised artifact depends on: ONNX Runtime's version and the CPU's features."""
    flags = ""
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            flags = next((line for line in cpuinfo if line.startswith("flags")), "")
    except OSError:
        pass
    text = f"{ort.__version__}|{platform.machine()}|{platform.processor()}|{flags}"
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def file_checksum(path: Path) -> str:
    """The xxh3_128 of the file's bytes (about 45 ms for the 223 MB artifact)."""
    digest = xxhash.xxh3_128()
    buffer = bytearray(READ_CHUNK)
    view = memoryview(buffer)
    with open(path, "rb", buffering=0) as f:
        while size := f.readinto(buffer):
            digest.update(view[:size])
    return digest.hexdigest()


def weights_key(weights: Path) -> str:
    """The pinned MD5 of an installed official file, else the file's xxh3_128."""
    official = official_file(weights)
    return official.md5 if official is not None else f"xxh3-{file_checksum(weights)}"


def artifact_path(weights: Path) -> Path:
    """Where the runtime artifact for ``weights`` lives (it may not exist yet)."""
    name = (f"irv2-{weights_key(weights)}-{SPEC.input_size}px-v{__version__}-"
            f"ort{machine_fingerprint()}.onnx")
    return cache_dir() / "runtime" / name


def checksum_path(artifact: Path) -> Path:
    """Where the artifact's checksum is recorded."""
    return artifact.with_name(f"{artifact.name}.xxh3")


class OnnxEngine:
    """Runs an optimised artifact with ONNX Runtime: (N, 299, 299, 3) -> probabilities."""

    def __init__(self, artifact: Path):
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
        self.session = ort.InferenceSession(str(artifact), options,
                                            providers=["CPUExecutionProvider"])
        self.input_name = self.session.get_inputs()[0].name

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        return self.session.run(None, {self.input_name: np.asarray(batch, np.float32)})[0]


def build_artifact(weights: Path, out: Path) -> Path:
    """Export ``weights`` to ONNX and write ONNX Runtime's optimisation of it for this
    machine to ``out``. Needs TensorFlow; scratch files go beside ``out`` and are removed."""
    from ..export.onnx_graph import export_onnx
    from ..network.h5weights import load_weights
    from ..network.model import build_model

    model = build_model()
    load_weights(model, weights)
    with tempfile.TemporaryDirectory(dir=out.parent, prefix=".export-") as scratch:
        plain = export_onnx(model, Path(scratch) / "plain.onnx")
        del model
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.optimized_model_filepath = str(out)
        options.log_severity_level = 3  # its note that the result suits this machine only
        ort.InferenceSession(str(plain), options, providers=["CPUExecutionProvider"])
    return out


def load_onnx_engine(weights: Path, notify: Notify = lambda message: None) -> OnnxEngine:
    """The ONNX Runtime engine for ``weights``, building the artifact on first use.

    An artifact that fails its checksum is rebuilt; a weights file that does not fit is
    refused before any build. Processes building the same artifact take turns on a lock
    (``notify`` hears when this one waits), and a build's leftovers are removed under it.
    """
    weights = Path(weights)
    target = artifact_path(weights)
    target.parent.mkdir(parents=True, exist_ok=True)
    engine = _load_if_sound(target, notify)
    if engine is not None:
        _remove_stale_builds_if_free(target)
        return engine
    from ..network.h5weights import check_weights_file

    check_weights_file(weights)
    with cache_lock(_lock_path(target), "another irv2 process building the fast runtime",
                    notify):
        engine = _load_if_sound(target)  # another process may have built it meanwhile
        if engine is not None:
            return engine
        _remove_leftovers(target)
        notify("building the fast runtime for these weights (once; about half a minute)...")
        _build(weights, target)
        return OnnxEngine(target)


def _lock_path(target: Path) -> Path:
    return target.with_name(f"{target.name}.lock")


def _load_if_sound(target: Path, notify: Notify = lambda message: None) -> OnnxEngine | None:
    """The engine for an existing artifact whose checksum matches; ``None`` if it is
    missing, or (said through ``notify``) damaged."""
    if not os.path.lexists(target):
        return None
    damage = _damage(target)
    if damage is None:
        try:
            return OnnxEngine(target)
        except LOAD_ERRORS as exc:
            damage = f"does not load ({exc})"
    notify(f"the runtime artifact {target} {damage}; rebuilding it")
    return None


def _damage(target: Path) -> str | None:
    """Why the artifact at ``target`` cannot be trusted, or ``None`` if its checksum matches."""
    try:
        if not stat.S_ISREG(target.lstat().st_mode):
            return "is not a regular file"
        recorded = checksum_path(target).read_text().split()
    except FileNotFoundError:
        return "has no checksum (its build did not finish)"
    except OSError as exc:
        return f"cannot be checked ({exc.strerror})"
    try:
        actual = [CHECKSUM, file_checksum(target)]
    except OSError as exc:
        return f"cannot be read ({exc.strerror})"
    return None if recorded == actual else "does not match its checksum: it is damaged"


def _remove(path: Path) -> None:
    """Remove whatever is at ``path``: a file, a link, a FIFO, or a whole folder."""
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    else:
        path.unlink(missing_ok=True)


def _stale_builds(target: Path) -> list[Path]:
    """Scratch folders of builds of ``target``: stale unless a builder holds its lock."""
    return list(target.parent.glob(f".build-{target.name}-*"))


def _remove_leftovers(target: Path) -> None:
    """Under ``target``'s lock: remove stale builds, the checksum and whatever is at
    ``target``, the checksum first so that no old checksum outlives its artifact."""
    for scratch in _stale_builds(target):
        shutil.rmtree(scratch, ignore_errors=True)
    _remove(checksum_path(target))
    _remove(target)


def _remove_stale_builds_if_free(target: Path) -> None:
    """Remove a killed build's scratch folders if no live builder holds ``target``'s lock."""
    stale = _stale_builds(target)
    if not stale:
        return
    try:
        with FileLock(_lock_path(target), timeout=0):
            for scratch in stale:
                shutil.rmtree(scratch, ignore_errors=True)
    except Timeout:
        pass  # a build is under way; the next run cleans up after it


def _build(weights: Path, target: Path) -> None:
    """Build the artifact in a scratch folder beside ``target`` and put it in place."""
    with tempfile.TemporaryDirectory(dir=target.parent,
                                     prefix=f".build-{target.name}-") as scratch:
        built = _run_build_child(weights, Path(scratch))
        _place(built, target, Path(scratch))


def _place(built: Path, target: Path, scratch: Path) -> None:
    """Put ``built`` in place, then record its checksum. Each step is durable before the
    next, so a crash leaves no checksum (rebuilt next time) or a pair that matches."""
    place(built, target)
    record = scratch / "checksum"
    record.write_text(f"{CHECKSUM} {file_checksum(target)}\n")
    place(record, checksum_path(target))


def _run_build_child(weights: Path, scratch: Path) -> Path:
    """Run ``build_artifact`` in a child process writing into ``scratch``; the child is
    killed if this program is interrupted or ends meanwhile."""
    built, refusal, log = scratch / "optimized.onnx", scratch / "refusal.txt", scratch / "log"
    with open(log, "wb") as log_file:
        child = subprocess.Popen(
            [sys.executable, "-c", BUILD_CHILD, str(weights), str(built), str(refusal)],
            stdin=subprocess.PIPE, stdout=log_file, stderr=subprocess.STDOUT)
    try:
        _wait(child)
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
        child.stdin.close()
    if refusal.exists():
        raise WeightsError(refusal.read_text())
    if child.returncode != 0:
        tail = " | ".join(log.read_text(errors="replace").strip().splitlines()[-3:])
        raise EngineError(
            f"building the fast runtime for {weights} failed (exit status "
            f"{child.returncode}); the reference Keras backend does not need it. "
            f"The build's last words: {tail}")
    return built


def _wait(child: subprocess.Popen) -> None:
    """Wait for ``child``; Ctrl-C interrupts the wait, and so does the program's end."""
    while True:
        try:
            child.wait(timeout=POLL_S)
            return
        except subprocess.TimeoutExpired:
            check_abandoned()


def build_child_main() -> None:
    """The build child: ``build_artifact(weights, out)`` from the command line; a weights
    file that does not fit is written to ``refusal``. It exits when its parent does."""
    threading.Thread(target=_exit_with_parent, daemon=True).start()
    weights, out, refusal = map(Path, sys.argv[1:4])
    try:
        build_artifact(weights, out)
    except WeightsError as exc:
        refusal.write_text(str(exc))
        sys.exit(3)


def _exit_with_parent() -> None:
    """Read stdin, a pipe from the parent, until it closes: the parent finished or died.
    (Raw reads: a daemon thread blocked in ``sys.stdin`` would abort the interpreter's exit.)"""
    while os.read(sys.stdin.fileno(), 1024):
        pass
    os._exit(1)
