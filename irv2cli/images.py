"""Open any image Pillow reads and turn it into the network's input.

Steps: open (with a pixel limit against decompression bombs), first frame,
EXIF orientation, RGB (transparency composited on white, 16-bit scaled to
8-bit), resize (centre crop or squash), then scale to [-1, 1].
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from .errors import ImageError
from .spec import DEFAULT_MAX_PIXELS, INTERPOLATIONS, RESIZE_MODES, SPEC

RESAMPLING = {name: Image.Resampling[name.upper()] for name in INTERPOLATIONS}


def to_rgb(image: Image.Image) -> Image.Image:
    """Convert any Pillow mode to RGB the way a person expects to see it.

    Transparent areas (alpha, or a palette/grey/RGB transparency key) are composited on
    white. Greys deeper than 8 bits are scaled, not clipped: 16-bit modes from 0..65535;
    32-bit integer ("I") from 0..65535 when it holds values above 255; float ("F") from
    0..1 when it holds none above 1.
    """
    if image.mode == "RGB" and "transparency" not in image.info:
        return image
    if image.mode.startswith("I") or image.mode == "F":
        grey = np.asarray(image, dtype=np.float64)
        peak = grey.max(initial=0.0)
        if image.mode.startswith("I;16") or (image.mode == "I" and peak > 255):
            grey = grey / 257.0
        elif image.mode == "F" and peak <= 1.0:
            grey = grey * 255.0
        return Image.fromarray(np.clip(np.rint(grey), 0, 255).astype(np.uint8)).convert("RGB")
    if image.mode in ("RGBA", "LA", "PA", "RGBa", "La") or "transparency" in image.info:
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return image.convert("RGB")


def open_rgb(path: str | os.PathLike, max_pixels: int | None = DEFAULT_MAX_PIXELS) -> Image.Image:
    """Open ``path``'s first frame, upright and in RGB, or raise ``ImageError``."""
    path = Path(path)
    try:
        with Image.open(path) as image:
            if max_pixels is not None and image.width * image.height > max_pixels:
                raise ImageError(
                    f"{path}: {image.width}x{image.height} pixels exceeds the limit of "
                    f"{max_pixels:,}; raise it with --max-pixels if you trust this file."
                )
            image.load()
            return to_rgb(ImageOps.exif_transpose(image))
    except FileNotFoundError:
        raise ImageError(f"{path}: no such file.") from None
    except IsADirectoryError:
        raise ImageError(f"{path}: is a directory, not an image.") from None
    except PermissionError:
        raise ImageError(f"{path}: permission denied.") from None
    except UnidentifiedImageError:
        raise ImageError(f"{path}: not an image Pillow can read.") from None
    except Image.DecompressionBombError as exc:
        raise ImageError(f"{path}: refused as a decompression bomb ({exc}).") from None
    except (OSError, SyntaxError, ValueError) as exc:
        raise ImageError(f"{path}: cannot decode the image ({exc}).") from None


def resize(image: Image.Image, mode: str = SPEC.default_resize,
           interpolation: str = SPEC.default_interpolation,
           size: int = SPEC.input_size) -> Image.Image:
    """Resize to ``size`` x ``size``.

    ``center-crop``: shorter side to round(size / crop_fraction), then the centre square
    (timm's recipe for these weights). ``squash``: straight to size x size, ignoring
    the aspect ratio, as ``keras.utils.load_img(path, target_size=...)`` does.
    """
    resample = RESAMPLING[interpolation]
    if mode == "squash":
        return image if image.size == (size, size) else image.resize((size, size), resample)
    if mode != "center-crop":
        raise ValueError(f"resize mode must be one of {RESIZE_MODES}, not {mode!r}")
    short = SPEC.shorter_side(size)
    width, height = image.size
    if width <= height:
        new_size = (short, max(size, int(height * short / width)))
    else:
        new_size = (max(size, int(width * short / height)), short)
    resized = image.resize(new_size, resample)
    left = round((new_size[0] - size) / 2.0)
    top = round((new_size[1] - size) / 2.0)
    return resized.crop((left, top, left + size, top + size))


def to_input(image: Image.Image) -> np.ndarray:
    """An RGB image as float32 HxWx3 scaled to [-1, 1] (x / 127.5 - 1)."""
    return np.asarray(image, dtype=np.float32) / np.float32(127.5) - np.float32(1.0)


def load_input(path: str | os.PathLike, mode: str = SPEC.default_resize,
               interpolation: str = SPEC.default_interpolation,
               max_pixels: int | None = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """Read ``path`` straight into one network input (299x299x3 float32 in [-1, 1])."""
    return to_input(resize(open_rgb(path, max_pixels), mode, interpolation))
