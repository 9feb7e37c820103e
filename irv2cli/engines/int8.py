"""The int8 runtime: the statically quantized artifact that ``irv2 quantize`` built, run by
ONNX Runtime as the fp32 one is.

It cannot be built on demand (it needs the user's calibration images), so a missing or
damaged one is refused with the hint to build it; the report it was built with rides
along for the run's summary.
"""

from __future__ import annotations

import os
from pathlib import Path

from ..errors import EngineError, Hint
from ..store import artifacts
from ..store.int8 import Int8Report, int8_artifact_path, int8_unlikely_faster, read_report
from .onnx_runtime import LOAD_ERRORS, Notify, OnnxEngine

SLOW_CPU = ("this CPU has no VNNI or AMX int8 instructions: the int8 runtime works here but "
            "is unlikely to be faster than fp32")


class Int8Engine(OnnxEngine):
    """An int8 artifact under ONNX Runtime, with the ``report`` it was built with."""

    def __init__(self, artifact: Path, report: Int8Report):
        super().__init__(artifact)
        self.report = report


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
