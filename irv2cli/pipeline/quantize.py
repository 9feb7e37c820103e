"""Build the int8 runtime for a weights file from the user's own photos, and measure it
against fp32 on photos it was not calibrated on.

>>> from irv2cli import quantize
>>> done = quantize("calibration/", check="held-out/", weights="my.h5")
>>> done.report.calibration_images, done.report.check.top1

The photos are decoded by the isolated decoding workers with the default preprocessing;
their pixels go to the build child (see ``engines.builds``), which quantizes the plain
graph and optimises it for this machine. The artifact is cached beside the fp32 one
(``engines.int8``), with a report that names the calibration set by its files'
contents: the same set again finds it built, another set builds it anew. Builders take
turns on the artifact's lock.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import xxhash

from ..engines.base import Engine
from ..engines.builds import build_artifact, build_lock
from ..engines.int8 import (
    SLOW_CPU,
    Agreement,
    Int8Engine,
    Int8Report,
    int8_artifact_path,
    int8_unlikely_faster,
    open_int8_engine,
    write_report,
)
from ..engines.onnx_runtime import OnnxEngine, load_onnx_engine
from ..errors import CalibrationError, EngineError
from ..inputs.decoding import DecodeLimits, DecodePool, default_workers
from ..inputs.images import Preprocessing, to_input
from ..inputs.paths import iter_image_paths
from ..spec import PROBABILITIES
from ..store.artifacts import file_checksum
from .batches import decoded_batches

Notify = Callable[[str], None]
PREPROCESSING = Preprocessing()  # what predict and embed use unless told otherwise
RECIPE = f"{PREPROCESSING.resize}/{PREPROCESSING.interpolation}"
BATCH = 8


@dataclass(frozen=True)
class Quantized:
    """The int8 artifact in place, its report, whether this call built it (else it was
    already built from the same images), and how many check images were left out because
    they are calibration images too."""

    artifact: Path
    report: Int8Report
    built: bool
    check_overlap: int = 0


def quantize(calibration: str | os.PathLike, check: str | os.PathLike | None = None,
             weights: str | os.PathLike | None = None, *, workers: int | None = None,
             notify: Notify = lambda message: None) -> Quantized:
    """Build the int8 artifact for ``weights`` (default: the official file, fetched if
    missing) calibrated on the images in the folder ``calibration``, unless it is already
    built from the same images; with ``check``, a folder of other images, measure it
    against fp32 there. ``CalibrationError`` if a folder holds no image that decodes.
    ``notify`` hears what is done, and if this CPU lacks the instructions that make int8
    fast."""
    calibration_files = _files(calibration)
    check_files = None if check is None else _files(check)
    if int8_unlikely_faster():
        notify(SLOW_CPU)
    if weights is None:
        from ..store.weights import ensure_weights

        weights = ensure_weights(notify=notify)
    weights = Path(weights)
    contents = {content_key(path) for path in calibration_files}
    key = calibration_key(contents, RECIPE)
    target = int8_artifact_path(weights)
    target.parent.mkdir(parents=True, exist_ok=True)
    count = min(workers or default_workers(), len(calibration_files))
    with DecodePool(count, DecodeLimits()) as decoders, \
            build_lock(target, "the int8 runtime", notify):
        existing = _existing(target, key, notify)
        if existing is not None and check_files is None:
            return Quantized(target, existing.report, built=False)
        held_out, overlap = _held_out(check_files, contents)
        fp32 = None if not held_out else _fp32_engine(weights, notify)
        to_check = None if not held_out else _pixels(held_out, decoders, "check on", notify)
        if existing is not None:
            report = replace(existing.report, check=_agreement(existing, fp32, to_check))
            write_report(report, target)
            return Quantized(target, report, False, overlap)
        pixels = _pixels(calibration_files, decoders, "calibrate on", notify)
        report = Int8Report(key, len(pixels), len(calibration_files) - len(pixels))
        return Quantized(target, _build(weights, target, report, pixels, fp32, to_check,
                                        notify), True, overlap)


def _build(weights: Path, target: Path, report: Int8Report, pixels: np.ndarray,
           fp32: Engine | None, to_check: np.ndarray | None, notify: Notify) -> Int8Report:
    """Under ``target``'s lock: build the int8 artifact for ``weights`` calibrated on
    ``pixels`` in place of whatever is at ``target``, with ``report`` and, if ``fp32`` is
    given, the check on ``to_check``; the report as placed."""
    placed = []

    def vouch(built: Path) -> None:  # the report goes before the artifact: see engines.int8
        placed.append(replace(report, check=_agreement(OnnxEngine(built), fp32, to_check)))
        write_report(placed[0], target)

    build_artifact(weights, target, notify, pixels, vouch)
    return placed[0]


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


def agreement(fp32: np.ndarray, int8: np.ndarray) -> Agreement:
    """How the class probabilities ``int8`` agree with ``fp32`` (both (N, classes))."""
    top1 = fp32.argmax(axis=1)
    top5 = np.argsort(-int8, axis=1, kind="stable")[:, :5]
    return Agreement(images=len(fp32), top1=float(np.mean(int8.argmax(axis=1) == top1)),
                     top5=float(np.mean((top5 == top1[:, None]).any(axis=1))),
                     max_change=float(np.abs(int8 - fp32).max()))


def _files(folder: str | os.PathLike) -> list[str]:
    """The files in ``folder`` (walked as predict walks it); ``CalibrationError`` if none."""
    if not os.path.isdir(folder):
        raise CalibrationError(f"{os.fspath(folder)} is not a folder of images")
    files = list(iter_image_paths([os.fspath(folder)]))
    if not files:
        raise CalibrationError(f"{os.fspath(folder)} holds no files")
    return files


def _existing(target: Path, key: str, notify: Notify) -> Int8Engine | None:
    """The sound int8 engine at ``target`` if it was built from the calibration set
    ``key``; ``None`` if there is none, it was built from other images, or (said through
    ``notify``) it is damaged."""
    if not os.path.lexists(target):
        return None
    try:
        engine = open_int8_engine(target)
    except EngineError as exc:
        notify(f"{exc.message}; rebuilding it")
        return None
    return engine if engine.report.calibration_key == key else None


def _held_out(check_files: list[str] | None, calibration: set[str]) -> tuple[list[str], int]:
    """The check files whose contents are not among the ``calibration`` set's, and how
    many were left out for being there."""
    if check_files is None:
        return [], 0
    held_out = [path for path in check_files if content_key(path) not in calibration]
    if not held_out:
        raise CalibrationError("every file to check on is also a calibration image; check "
                               "on images the int8 runtime was not calibrated on")
    return held_out, len(check_files) - len(held_out)


def _pixels(files: list[str], decoders: DecodePool, what: str, notify: Notify
            ) -> np.ndarray:
    """The pixels (N, 299, 299, 3) uint8 of those ``files`` that decode (each that does
    not is said through ``notify``); ``CalibrationError`` if none does. ``what`` they are
    for goes into the messages."""
    notify(f"decoding {len(files)} images to {what}...")
    pixels, first_error = [], None
    for batch in decoded_batches(files, decoders, PREPROCESSING, BATCH):
        for error in batch.errors.values():
            notify(f"left out: {error}")
            first_error = first_error or error
        pixels.append(batch.pixels)
    decoded = np.concatenate(pixels)
    if not len(decoded):
        raise CalibrationError(f"none of the {len(files)} files to {what} could be decoded "
                               f"as an image (the first: {first_error})")
    return decoded


def _fp32_engine(weights: Path, notify: Notify) -> Engine:
    """The fp32 engine to check against; ``CalibrationError`` for weights that give no
    class probabilities."""
    fp32 = load_onnx_engine(weights, notify)
    if PROBABILITIES not in fp32.outputs:
        raise CalibrationError("a check compares class probabilities, which these "
                               "feature-extractor (notop) weights do not give")
    return fp32


def _agreement(int8: Engine, fp32: Engine | None, pixels: np.ndarray | None
               ) -> Agreement | None:
    """How ``int8`` agrees with ``fp32`` on ``pixels``; ``None`` without a check."""
    if fp32 is None or pixels is None:
        return None
    ours, theirs = [], []
    for start in range(0, len(pixels), BATCH):
        batch = to_input(pixels[start:start + BATCH])
        ours.append(int8(batch)[PROBABILITIES])
        theirs.append(fp32(batch)[PROBABILITIES])
    return agreement(np.concatenate(theirs), np.concatenate(ours))
