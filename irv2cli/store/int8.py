"""The int8 runtime's place in the cache: its artifact, its report, its calibration key,
and whether this CPU has the instructions that make int8 fast.

The int8 artifact lies beside the fp32 one and is named like it (weights, input size,
version, format, ONNX Runtime and CPU) plus ``-int8``; like it, it is a graph with its
weights in ``NAME.onnx.data``, checked, placed and locked as the fp32 one is (see
``artifacts``). Beside it, ``NAME.onnx.report.json`` says which calibration set built it
and, if measured, how it agrees with fp32. A build places the report before the artifact
and the checksum last, after removing the old checksum first, so a checksum that matches
vouches for the report beside it too.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from pathlib import Path

import xxhash

from .artifacts import artifact_path, file_checksum
from .atomic import atomic_file

REPORT_FORMAT = 1
# Where ONNX Runtime's int8 kernels gain over fp32: VNNI (AVX-512 or AVX) and AMX.
INT8_FLAGS = frozenset({"avx512_vnni", "avx_vnni", "amx_int8"})
CPUINFO = "/proc/cpuinfo"
CPUINFO_VARIABLE = "IRV2_CPUINFO"  # read the CPU's flags from this file instead (tests)


@dataclass(frozen=True)
class Agreement:
    """int8 against fp32 on ``images`` held-out images: how often int8's top-1 is fp32's
    (``top1``), how often fp32's top-1 is among int8's top 5 (``top5``), both fractions,
    and the largest change of any class probability (``max_change``)."""

    images: int
    top1: float
    top5: float
    max_change: float


@dataclass(frozen=True)
class Int8Report:
    """What one int8 artifact was built from, and how it measured against fp32."""

    calibration_key: str
    calibration_images: int  # the images that decoded and were used
    calibration_left_out: int  # files of the calibration folder that did not decode
    check: Agreement | None = None

    def to_json(self) -> str:
        return json.dumps({"format": REPORT_FORMAT, **asdict(self)}, indent=1)

    @classmethod
    def from_json(cls, text: str) -> Int8Report:
        """The report in ``text``; ``ValueError`` if it is not one (damaged, or foreign)."""
        try:
            record = json.loads(text)
            if record.pop("format") != REPORT_FORMAT:
                raise ValueError("an unknown report format")
            check = record.pop("check")
            return cls(**record, check=None if check is None else Agreement(**check))
        except (TypeError, KeyError, AttributeError) as exc:
            raise ValueError(f"not an int8 report ({exc})") from None


def int8_artifact_path(weights: Path) -> Path:
    """Where the int8 artifact for ``weights`` on this machine lives (it may not exist)."""
    fp32 = artifact_path(weights)
    return fp32.with_name(f"{fp32.stem}-int8{fp32.suffix}")


def report_path(artifact: Path) -> Path:
    """Where the report of the int8 ``artifact`` lies."""
    return artifact.with_name(f"{artifact.name}.report.json")


def read_report(artifact: Path) -> Int8Report:
    """The report beside ``artifact``; ``OSError`` or ``ValueError`` if it cannot be read."""
    return Int8Report.from_json(report_path(artifact).read_text())


def write_report(report: Int8Report, artifact: Path) -> None:
    """Put ``report`` beside ``artifact``, atomically."""
    with atomic_file(report_path(artifact)) as stream:
        stream.write(report.to_json().encode())


def content_key(path: str | os.PathLike) -> str:
    """The xxh3_128 of one file's bytes."""
    return file_checksum(Path(path))


def calibration_key(contents: Iterable[str], recipe: str) -> str:
    """The key of a calibration set: its files' contents (``content_key`` of each; their
    names and order do not matter) and the preprocessing ``recipe`` that decoded them."""
    digest = xxhash.xxh3_128(recipe.encode())
    for key in sorted(contents):
        digest.update(key.encode())
    return digest.hexdigest()


def cpu_flags() -> frozenset[str] | None:
    """The CPU's feature flags from ``/proc/cpuinfo`` (or the file ``$IRV2_CPUINFO`` names);
    ``None`` where there is no such file or it names no x86 flags (other systems, ARM)."""
    try:
        with open(os.environ.get(CPUINFO_VARIABLE) or CPUINFO) as cpuinfo:
            line = next((line for line in cpuinfo if line.startswith("flags")), None)
    except OSError:
        return None
    return None if line is None else frozenset(line.partition(":")[2].split())


def int8_unlikely_faster() -> bool:
    """Whether this CPU is known to lack VNNI and AMX, so int8 is unlikely to beat fp32."""
    flags = cpu_flags()
    return flags is not None and not flags & INT8_FLAGS
