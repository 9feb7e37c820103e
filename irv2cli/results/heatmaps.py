"""Grad-CAM heatmaps drawn over the images they explain, and the PNG files they go to.

NumPy and Pillow only: the heatmap (8x8, from ``network.gradcam``) is drawn at the
image's own size, upright and in RGB as the network's input was made from it.

Where it goes: the network saw the region of the image that the resize keeps
(``seen_region``): all of it with ``squash``, the centre crop's box with ``center-crop``,
both in the image's own pixel coordinates with the resize's own arithmetic. Heatmap cell
(i, j) covers the (i, j)th of 8x8 equal squares of that region. Each image pixel inside
the region takes the bilinear sample of the heatmap at its centre (cell values sit at
their squares' centres and hold beyond the outer ones); outside it, where the network
never looked, the photo is dimmed and left uncoloured. (For a large JPEG the network's
input comes from a reduced-scale decode, as in predict; the region it covers then
differs from this one by at most about a pixel of the 333-pixel resized image.)
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image

from ..errors import Hint, OutputError
from ..inputs.images import center_crop_box
from ..inputs.paths import InputSelection, iter_image_paths, path_key
from ..spec import SPEC
from ..store.atomic import atomic_file
from .writers import shown, write_error

Box = tuple[float, float, float, float]
"""A region of an image: left, top, right, bottom, in pixel edges."""

SUFFIX = ".cam.png"
OPACITY = 0.5  # of the colours over the photo
DIMMED = 0.4  # the brightness left to what the network did not see
ROWS = 256  # image rows coloured at once: a large photo costs a bounded amount of memory
# The "jet" colormap: (position, red, green, blue), blue for 0 to red for 1.
JET = np.array([[0.0, 0.0, 0.0, 0.5], [0.125, 0.0, 0.0, 1.0], [0.375, 0.0, 1.0, 1.0],
                [0.625, 1.0, 1.0, 0.0], [0.875, 1.0, 0.0, 0.0], [1.0, 0.5, 0.0, 0.0]])


def seen_region(size: tuple[int, int], resize: str = SPEC.default_resize) -> Box:
    """The region of an image of ``size`` (width, height) that the ``resize`` mode made
    into the network's input."""
    if resize == "squash":
        return (0.0, 0.0, float(size[0]), float(size[1]))
    return center_crop_box(size)


def _axis(length: int, start: float, stop: float, cells: int
          ) -> tuple[np.ndarray, np.ndarray]:
    """Bilinear weights (length, cells) sampling ``cells`` values spread over
    [start, stop) at the centre of each of ``length`` pixels, and which pixels lie inside."""
    centres = np.arange(length) + 0.5
    position = np.clip((centres - start) / (stop - start) * cells - 0.5, 0, cells - 1)
    low = np.minimum(np.floor(position).astype(int), max(cells - 2, 0))
    high = np.minimum(low + 1, cells - 1)
    weights = np.zeros((length, cells), np.float32)
    rows = np.arange(length)
    weights[rows, low] = 1 - (position - low)
    weights[rows, high] += position - low
    return weights, (centres >= start) & (centres < stop)


def upsample(heatmap: np.ndarray, size: tuple[int, int], region: Box,
             rows: slice = slice(None)) -> tuple[np.ndarray, np.ndarray]:
    """``heatmap`` over ``region`` of an image of ``size`` (width, height), for the image
    rows ``rows`` (default: all): the values in [0, 1] (height, width), zero outside the
    region, and whether each pixel is inside it (what the network saw)."""
    columns, inside_x = _axis(size[0], region[0], region[2], heatmap.shape[1])
    weights, inside_y = _axis(size[1], region[1], region[3], heatmap.shape[0])
    seen = inside_y[rows, None] & inside_x[None, :]
    values = weights[rows] @ (heatmap.astype(np.float32) @ columns.T)
    return np.clip(values, 0, 1) * seen, seen


def colorize(values: np.ndarray) -> np.ndarray:
    """Values in [0, 1] as jet colours, float32 in [0, 255] with a last axis of 3."""
    channels = [np.interp(values, JET[:, 0], JET[:, c]) for c in (1, 2, 3)]
    return (np.stack(channels, axis=-1) * 255).astype(np.float32)


def overlay(image: Image.Image, heatmap: np.ndarray, region: Box) -> Image.Image:
    """The RGB ``image`` with ``heatmap`` blended over ``region``, the rest dimmed; drawn
    ``ROWS`` rows at a time."""
    photo = np.asarray(image, np.uint8)
    blended = np.empty_like(photo)
    for top in range(0, image.height, ROWS):
        part = slice(top, top + ROWS)
        pixels = photo[part].astype(np.float32)
        values, seen = upsample(heatmap, image.size, region, part)
        mixed = np.where(seen[..., None], (1 - OPACITY) * pixels + OPACITY * colorize(values),
                         DIMMED * pixels)
        blended[part] = np.clip(np.rint(mixed), 0, 255).astype(np.uint8)
    return Image.fromarray(blended, "RGB")


def _named(relative: str, taken: set[str]) -> str:
    """``a/b.jpg`` as ``a/b.cam.png``, or ``a/b-2.cam.png`` if that is ``taken``."""
    stem = os.path.splitext(relative)[0]
    name, count = stem + SUFFIX, 1
    while path_key(name) in taken:
        count += 1
        name = f"{stem}-{count}{SUFFIX}"
    taken.add(path_key(name))
    return name


def _images(inputs: Sequence[str], selection: InputSelection) -> list[tuple[str, str]]:
    """Each image of ``inputs`` and its name relative to the folder it was found in; a
    folder's ``*.cam.png`` files are explain's own outputs, never inputs."""
    images, seen = [], set()
    for given in inputs:
        walked = os.path.isdir(given)
        for path in iter_image_paths([given], selection):
            if walked and path.lower().endswith(SUFFIX):
                continue
            if path_key(path) not in seen:
                seen.add(path_key(path))
                relative = os.path.relpath(path, given) if walked else None
                images.append((path, relative or os.path.basename(path)))
    return images


def output_plan(inputs: Sequence[str], output: str | os.PathLike | None = None,
                force: bool = False, selection: InputSelection | None = None
                ) -> list[tuple[str, Path]]:
    """Each image of ``inputs`` (files, folders walked, their ``*.cam.png`` left out) and
    the PNG its heatmap goes to.

    One image file with an ``output`` named ``*.png`` that is not a folder: that file.
    Otherwise the folder ``output`` (default: the current one) gets one ``NAME.cam.png``
    per image, a folder input's subfolders mirrored; a name taken twice gets ``-2``.
    Unless ``force``, refuses (``OutputError``) when any of those files already exists.
    """
    images = _images(inputs, selection or InputSelection())
    target = Path(output if output is not None else ".")
    if (len(images) == 1 and not os.path.isdir(inputs[0]) and target.suffix.lower() == ".png"
            and not target.is_dir()):
        plan = [(images[0][0], target)]
    else:
        taken: set[str] = set()
        plan = [(path, target / _named(relative, taken)) for path, relative in images]
    existing = [str(path) for _, path in plan if os.path.lexists(path)]
    if existing and not force:
        more = f" (and {len(existing) - 1} more)" if len(existing) > 1 else ""
        raise OutputError(f"{shown(existing[0])} already exists{more}", Hint.REPLACE)
    return plan


def save_png(image: Image.Image, path: str | os.PathLike, force: bool = False) -> None:
    """Write ``image`` to ``path`` as PNG (mode 0644), whole or not at all; an existing
    ``path`` is replaced only with ``force`` (otherwise ``OutputError``, and it is left as
    it was, even if it appeared while this wrote)."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise write_error(str(path.parent), exc) from None
    try:
        with atomic_file(path, mode=0o644, replace=force) as stream:
            image.save(stream, format="PNG")
    except FileExistsError:
        raise OutputError(f"{shown(path)} already exists", Hint.REPLACE) from None
    except OSError as exc:
        raise write_error(str(path), exc) from None
