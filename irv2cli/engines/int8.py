"""The int8 runtime: the statically quantized artifact that ``irv2 quantize`` builds (see
``pipeline.quantize``), where it lies, the report it was built with, and loading it.

It lies beside the fp32 artifact and is named like it (weights, input size, version,
format, ONNX Runtime and CPU) plus ``-int8``; like it, it is a graph with its weights in
``NAME.onnx.data``, checked, placed and locked as the fp32 one is (see
``store.artifacts``). Beside it, ``NAME.onnx.report.json`` says which calibration set
built it and, if measured, how it agrees with fp32. A build places the report before the
artifact and the checksum last, after removing the old checksum first, so a checksum
that matches vouches for the report beside it too.

It cannot be built on demand (it needs the user's calibration images), so a missing or
damaged one is refused with the hint to build it; its report rides along for the run's
summary.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path

from ..errors import EngineError, Hint
from ..store import artifacts
from ..store.artifacts import artifact_path
from ..store.atomic import atomic_file
from .onnx_runtime import LOAD_ERRORS, Notify, OnnxEngine

REPORT_FORMAT = 1
# Where ONNX Runtime's int8 kernels gain over fp32: VNNI (AVX-512 or AVX) and AMX.
INT8_FLAGS = frozenset({"avx512_vnni", "avx_vnni", "amx_int8"})
CPUINFO = "/proc/cpuinfo"
CPUINFO_VARIABLE = "IRV2_CPUINFO"  # read the CPU's flags from this file instead (tests)
SLOW_CPU = ("this CPU has no VNNI or AMX int8 instructions: the int8 runtime works here but "
            "is unlikely to be faster than fp32")


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


class Int8Engine(OnnxEngine):
    """An int8 artifact under ONNX Runtime, with the ``report`` it was built with."""

    def __init__(self, artifact: Path, report: Int8Report):
        super().__init__(artifact)
        self.report = report


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


def load_int8_engine(weights: Path, notify: Notify = lambda message: None) -> Int8Engine:
    """The int8 engine for ``weights`` on this machine (see ``open_int8_engine``).
    ``notify`` hears, once, if this CPU lacks the instructions that make int8 fast."""
    target = int8_artifact_path(Path(weights))
    engine = open_int8_engine(target)
    artifacts.remove_stale_builds_if_free(target)
    if int8_unlikely_faster():
        notify(SLOW_CPU)
    return engine


def open_int8_engine(target: Path) -> Int8Engine:
    """The engine for the int8 artifact at ``target``; ``EngineError`` (hint: build it) if
    it is missing or cannot be trusted: its checksum, its report or its graph."""
    if not os.path.lexists(target):
        raise EngineError(f"there is no int8 runtime for these weights on this machine "
                          f"({target})", Hint.QUANTIZE)
    damage = artifacts.damage(target)
    if damage is None:
        try:
            report = read_report(target)
        except (OSError, ValueError) as exc:
            damage = f"has no readable report ({exc})"
    if damage is None:
        try:
            return Int8Engine(target, report)
        except LOAD_ERRORS as exc:
            damage = f"does not load ({exc})"
    raise EngineError(f"the int8 runtime {target} {damage}", Hint.QUANTIZE)


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
