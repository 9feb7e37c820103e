"""The runtime artifacts' cache: one optimised ONNX graph per weights file and machine,
its weights in a data file beside it.

An artifact lives under ``$IRV2_HOME/runtime``, named by the weights' hash, the input
size, this package's version, the artifact format, the ONNX Runtime version and the
CPU, so a stale one is never used. ``NAME.onnx`` is the graph; ``NAME.onnx.data``, which
the graph names, holds its weights, which ONNX Runtime maps into memory rather than
parsing and copying them. Beside them lies ``NAME.onnx.xxh3``, their xxh3_128 checksums,
written only after both are durably in place: an artifact without matching checksums
(damaged, truncated, half-written, or something else at either path) is never trusted.
Builds run in scratch folders beside it, under ``NAME.onnx.lock``.
"""

from __future__ import annotations

import contextlib
import glob
import hashlib
import mmap
import os
import platform
import shutil
import stat
import tempfile
from collections.abc import Iterator
from functools import cache
from pathlib import Path

import xxhash

from ..spec import SPEC
from ..version import __version__
from .atomic import place
from .weights import cache_dir, official_file

# What the artifact holds: 3 is the named outputs "probabilities" and "features", the
# weights in a data file beside the graph (formats 1, probabilities alone, and 2, one
# file, are never loaded).
ARTIFACT_FORMAT = 3
CHECKSUM = "xxh3_128"


@cache
def machine_fingerprint() -> str:
    """What the optimised artifact depends on: ONNX Runtime's version and the CPU's features."""
    import onnxruntime

    flags = ""
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            flags = next((line for line in cpuinfo if line.startswith("flags")), "")
    except OSError:
        pass
    text = f"{onnxruntime.__version__}|{platform.machine()}|{platform.processor()}|{flags}"
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def file_checksum(path: Path) -> str:
    """The xxh3_128 of the file's bytes (about 35 ms for the artifact's 223 MB of weights),
    hashed in one call on the file mapped into memory: other threads run meanwhile."""
    with open(path, "rb") as f:
        if os.fstat(f.fileno()).st_size == 0:
            return xxhash.xxh3_128().hexdigest()
        with mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as mapped:
            return xxhash.xxh3_128(mapped).hexdigest()


def weights_key(weights: Path) -> str:
    """The pinned MD5 of an installed official file, else the file's xxh3_128 (hashed
    once per file and version of it in a process: a run with a head asks twice)."""
    official = official_file(Path(weights))
    if official is not None:
        return official.md5
    info = os.stat(weights)
    return _content_key(os.path.realpath(weights), info.st_dev, info.st_ino, info.st_size,
                        info.st_mtime_ns)


@cache
def _content_key(path: str, device: int, inode: int, size: int, modified: int) -> str:
    return f"xxh3-{file_checksum(Path(path))}"


def artifact_path(weights: Path) -> Path:
    """Where the runtime artifact for ``weights`` lives (it may not exist yet)."""
    name = (f"irv2-{weights_key(weights)}-{SPEC.input_size}px-v{__version__}-"
            f"a{ARTIFACT_FORMAT}-ort{machine_fingerprint()}.onnx")
    return cache_dir() / "runtime" / name


def data_path(artifact: Path) -> Path:
    """Where the weights of the graph at ``artifact`` lie (the graph names this file)."""
    return artifact.with_name(f"{artifact.name}.data")


def checksum_path(artifact: Path) -> Path:
    """Where the artifact's checksums are recorded."""
    return artifact.with_name(f"{artifact.name}.xxh3")


def checksums(artifact: Path) -> list[str]:
    """The record of the artifact's checksums: the kind, then the graph's and the data's."""
    return [CHECKSUM, file_checksum(artifact), file_checksum(data_path(artifact))]


def lock_path(artifact: Path) -> Path:
    """The lock that builders of ``artifact`` hold."""
    return artifact.with_name(f"{artifact.name}.lock")


def damage(target: Path) -> str | None:
    """Why the artifact at ``target`` cannot be trusted, or ``None`` if its checksums match."""
    data = data_path(target)
    try:
        if not stat.S_ISREG(target.lstat().st_mode):
            return "is not a regular file"
        recorded = checksum_path(target).read_text().split()
    except FileNotFoundError:
        return "has no checksum (its build did not finish)"
    except OSError as exc:
        return f"cannot be checked ({exc.strerror})"
    try:
        if not stat.S_ISREG(data.lstat().st_mode):
            return f"has something other than a file as its weights ({data.name})"
    except FileNotFoundError:
        return f"has lost its weights ({data.name} is missing)"
    except OSError as exc:
        return f"cannot be checked ({exc.strerror})"
    try:
        actual = checksums(target)
    except OSError as exc:
        return f"cannot be read ({exc.strerror})"
    return None if recorded == actual else "does not match its checksum: it is damaged"


@contextlib.contextmanager
def build_folder(target: Path) -> Iterator[Path]:
    """A scratch folder for one build of ``target``, beside it; removed afterwards."""
    with tempfile.TemporaryDirectory(dir=target.parent,
                                     prefix=f".build-{target.name}-") as scratch:
        yield Path(scratch)


def install(built: Path, target: Path, scratch: Path) -> None:
    """Put ``built`` (a graph named as ``target``) and its data in place, then record their
    checksums. Each step is durable before the next, so a crash leaves no checksum
    (rebuilt next time) or an artifact that matches it."""
    place(data_path(built), data_path(target))
    place(built, target)
    record = scratch / "checksum"
    record.write_text(" ".join(checksums(target)) + "\n")
    place(record, checksum_path(target))


def remove_leftovers(target: Path) -> None:
    """Under ``target``'s lock: remove stale builds and whatever lies at ``target`` and
    beside it under its name (its data, its checksum, a report), the checksum first so
    that no old checksum outlives what it vouched for."""
    for scratch in _stale_builds(target):
        shutil.rmtree(scratch, ignore_errors=True)
    _remove(checksum_path(target))
    for path in (target, *target.parent.glob(f"{glob.escape(target.name)}.*")):
        if path != lock_path(target):
            _remove(path)


def remove_stale_builds_if_free(target: Path) -> None:
    """Remove a killed build's scratch folders if no live builder holds ``target``'s lock."""
    stale = _stale_builds(target)
    if not stale:
        return
    from filelock import FileLock, Timeout

    try:
        with FileLock(lock_path(target), timeout=0):
            for scratch in stale:
                shutil.rmtree(scratch, ignore_errors=True)
    except Timeout:
        pass  # a build is under way; the next run cleans up after it


def _stale_builds(target: Path) -> list[Path]:
    """Scratch folders of builds of ``target``: stale unless a builder holds its lock."""
    return list(target.parent.glob(f".build-{target.name}-*"))


def _remove(path: Path) -> None:
    """Remove whatever is at ``path``: a file, a link, a FIFO, or a whole folder."""
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    else:
        path.unlink(missing_ok=True)


def started_marker(built: Path) -> Path:
    """The file a build child creates beside ``built`` once the weights are accepted and
    the build proper begins."""
    return built.with_name(f"{built.name}.started")


OFFICIAL_FEATURES = f"official-{SPEC.top_weights.md5}"


def network_key(weights: Path | None) -> str:
    """What a head's features depend on among the network's weights: ``weights`` (``None``:
    the official file) as ``weights_key`` names it, except that both official files (with
    and without the top) give the same features, so they share one key."""
    if weights is None or official_file(Path(weights)) is not None:
        return OFFICIAL_FEATURES
    return weights_key(Path(weights))
