"""The runtime artifacts' cache: one optimised ONNX file per weights file and machine.

An artifact lives under ``$IRV2_HOME/runtime``, named by the weights' hash, the input
size, this package's version, the artifact format, the ONNX Runtime version and the
CPU, so a stale one is never used. Beside ``NAME.onnx`` lies ``NAME.onnx.xxh3``, its
xxh3_128 checksum, written only after the artifact is durably in place: an artifact
without a matching checksum (damaged, truncated, half-written, or something else at its
path) is never trusted. Builds run in scratch folders beside it, under ``NAME.onnx.lock``.
"""

from __future__ import annotations

import contextlib
import hashlib
import platform
import shutil
import stat
import tempfile
from collections.abc import Iterator
from functools import cache
from pathlib import Path

import xxhash
from filelock import FileLock, Timeout

from ..spec import SPEC
from ..version import __version__
from .atomic import place
from .weights import cache_dir, official_file

# What the artifact holds: 2 is the named outputs "probabilities" and "features" (format 1,
# probabilities alone, is never loaded).
ARTIFACT_FORMAT = 2
CHECKSUM = "xxh3_128"
READ_CHUNK = 256 * 1024


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
            f"a{ARTIFACT_FORMAT}-ort{machine_fingerprint()}.onnx")
    return cache_dir() / "runtime" / name


def checksum_path(artifact: Path) -> Path:
    """Where the artifact's checksum is recorded."""
    return artifact.with_name(f"{artifact.name}.xxh3")


def lock_path(artifact: Path) -> Path:
    """The lock that builders of ``artifact`` hold."""
    return artifact.with_name(f"{artifact.name}.lock")


def damage(target: Path) -> str | None:
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


@contextlib.contextmanager
def build_folder(target: Path) -> Iterator[Path]:
    """A scratch folder for one build of ``target``, beside it; removed afterwards."""
    with tempfile.TemporaryDirectory(dir=target.parent,
                                     prefix=f".build-{target.name}-") as scratch:
        yield Path(scratch)


def install(built: Path, target: Path, scratch: Path) -> None:
    """Put ``built`` in place, then record its checksum. Each step is durable before the
    next, so a crash leaves no checksum (rebuilt next time) or a pair that matches."""
    place(built, target)
    record = scratch / "checksum"
    record.write_text(f"{CHECKSUM} {file_checksum(target)}\n")
    place(record, checksum_path(target))


def remove_leftovers(target: Path) -> None:
    """Under ``target``'s lock: remove stale builds, the checksum and whatever is at
    ``target``, the checksum first so that no old checksum outlives its artifact."""
    for scratch in _stale_builds(target):
        shutil.rmtree(scratch, ignore_errors=True)
    _remove(checksum_path(target))
    _remove(target)


def remove_stale_builds_if_free(target: Path) -> None:
    """Remove a killed build's scratch folders if no live builder holds ``target``'s lock."""
    stale = _stale_builds(target)
    if not stale:
        return
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
