"""Open any image Pillow reads and turn it into the network's input.

Steps: open (with a pixel limit against decompression bombs), first frame, a
reduced-scale JPEG decode where the result is not promised pixel for pixel,
EXIF orientation, RGB (transparency composited on white, 16-bit scaled to
8-bit), resize (centre crop or squash, never through an intermediate larger
than needed), then scale to [-1, 1]. HEIC/HEIF photos are read through
pillow-heif, registered the first time a file is not recognised without it. A path may
be a URI (see ``uris``): its file is read whole through pyarrow, then decoded the same
way.

NumPy is imported only where arrays are made, so the decoding worker processes,
which ship raw bytes, start without it.
"""

from __future__ import annotations

import io
import math
import os
import stat
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING

from PIL import Image, ImageOps, UnidentifiedImageError

from ..errors import ImageError
from ..spec import DEFAULT_MAX_PIXELS, INTERPOLATIONS, RESIZE_MODES, SPEC
from .uris import is_uri, local_path, read_uri

if TYPE_CHECKING:
    import numpy as np

RESAMPLING = {name: Image.Resampling[name.upper()] for name in INTERPOLATIONS}
# Centre crops whose resized whole image would exceed this many output squares (an aspect
# ratio beyond about 14:1) resample just the kept region instead.
MAX_INTERMEDIATE_SQUARES = 16


@dataclass(frozen=True)
class Preprocessing:
    """How a file becomes a network input: resize mode, filter and the pixel limit."""

    resize: str = SPEC.default_resize
    interpolation: str = SPEC.default_interpolation
    max_pixels: int | None = DEFAULT_MAX_PIXELS

    @property
    def reduced_decode(self) -> bool:
        """Whether a JPEG may be decoded at a reduced scale: not with ``nearest``, whose
        pixels are promised to be the file's own (Keras's ``load_img`` recipe)."""
        return self.interpolation != "nearest"

    def draft_size(self, size: tuple[int, int]) -> tuple[int, int]:
        """The least a decode of an image of ``size`` may shrink to and still hand the resize
        every pixel it needs: 299x299 for ``squash``, 333 on the shorter side for the crop.
        (A JPEG decoder scales by 1/2, 1/4 or 1/8, so what it gives is often larger.)"""
        if self.resize == "squash":
            return (SPEC.input_size, SPEC.input_size)
        scale = SPEC.shorter_side() / min(size)
        return (math.ceil(size[0] * scale), math.ceil(size[1] * scale))


@cache
def register_heif() -> None:
    """Let Pillow open HEIC/HEIF files (iPhone photos) through pillow-heif."""
    from pillow_heif import register_heif_opener

    register_heif_opener()


def _open(path: Path | io.BytesIO) -> Image.Image:
    """``Image.open``; a file that Pillow does not recognise is tried again with pillow-heif
    registered (registering it adds about 17 ms to a process's start, which most runs
    never need)."""
    try:
        return Image.open(path)
    except UnidentifiedImageError:
        if register_heif.cache_info().currsize:  # pillow-heif was tried already
            raise
    register_heif()
    return Image.open(path)


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
        import numpy as np

        grey = np.array(image, dtype=np.float32)  # in place from here: big greys stay cheap
        peak = grey.max(initial=0.0)
        if image.mode.startswith("I;16") or (image.mode == "I" and peak > 255):
            grey /= 257.0
        elif image.mode == "F" and peak <= 1.0:
            grey *= 255.0
        np.clip(np.rint(grey, out=grey), 0, 255, out=grey)
        return Image.fromarray(grey.astype(np.uint8)).convert("RGB")
    if image.mode in ("RGBA", "LA", "PA", "RGBa", "La") or "transparency" in image.info:
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return image.convert("RGB")


def _require_regular_file(path: Path, name: str | Path) -> None:
    """Refuse FIFOs, devices and sockets before opening them: reading one can block forever."""
    mode = os.stat(path).st_mode
    if stat.S_ISDIR(mode):
        raise IsADirectoryError(path)
    if not stat.S_ISREG(mode):
        raise ImageError(f"{name}: not a regular file, so not read.")


def _readable(name: str | Path) -> Path | io.BytesIO:
    """What Pillow opens for input ``name`` (a local path, or a URI as a string): a regular
    local file, or the bytes of a URI's file."""
    local = local_path(name) if isinstance(name, str) else name  # file:// is local
    if local is not None:
        _require_regular_file(Path(local), name)
        return Path(local)
    try:
        return io.BytesIO(read_uri(name))
    except (FileNotFoundError, PermissionError):
        raise
    except (OSError, ValueError) as exc:  # the store, the network or the URI itself
        reason = (str(exc).strip().splitlines() or [type(exc).__name__])[0]  # one line
        raise ImageError(f"{name}: cannot read it ({reason}).") from None


def open_rgb(path: str | os.PathLike, max_pixels: int | None = DEFAULT_MAX_PIXELS,
             draft: Preprocessing | None = None, data: bytes | None = None) -> Image.Image:
    """Open ``path``'s first frame, upright and in RGB, or raise ``ImageError``. ``path``
    may be a URI (``s3://bucket/photo.jpg``); with ``data``, the image is those bytes (an
    upload, say) and ``path`` only names it in errors.

    With ``draft``, a JPEG much larger than that preprocessing needs is decoded at a
    reduced scale (DCT scaling, ``Image.draft``), which is several times faster.
    """
    text = os.fspath(path)
    path = text if isinstance(text, str) and (data is not None or is_uri(text)) else Path(path)
    try:
        with _open(_readable(path) if data is None else io.BytesIO(data)) as image:
            if not image.width or not image.height:
                raise ImageError(f"{path}: the image has no pixels ({image.width}x"
                                 f"{image.height}).")
            if max_pixels is not None and image.width * image.height > max_pixels:
                raise ImageError(
                    f"{path}: {image.width}x{image.height} pixels exceeds the limit of "
                    f"{max_pixels:,}; raise the pixel limit (max-pixels) if you trust this "
                    "file.")
            if draft is not None and draft.reduced_decode:
                image.draft(image.mode, draft.draft_size(image.size))
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
        raise ImageError(f"{path}: refused as a decompression bomb ({exc}); raise the "
                         "pixel limit (max-pixels) if you trust this file.") from None
    except (OSError, SyntaxError, ValueError) as exc:
        raise ImageError(f"{path}: cannot decode the image ({exc}).") from None


def resize(image: Image.Image, mode: str = SPEC.default_resize,
           interpolation: str = SPEC.default_interpolation,
           size: int = SPEC.input_size) -> Image.Image:
    """Resize to ``size`` x ``size``.

    ``center-crop``: shorter side to round(size / crop_fraction), then the centre square
    (timm's recipe for these weights). ``squash``: straight to size x size, ignoring
    the aspect ratio, as ``keras.utils.load_img(path, target_size=...)`` does.

    For an extreme aspect ratio, the centre crop resamples only the source region the
    crop keeps (Pillow's ``box``) instead of building the whole resized image first: for
    a 1 x 40,000,000 image that would have 13 billion pixels. The two agree to within
    float rounding (a sampling position landing on the other side of .5).
    """
    resample = RESAMPLING[interpolation]
    if mode == "squash":
        return image if image.size == (size, size) else image.resize((size, size), resample)
    if mode != "center-crop":
        raise ValueError(f"resize mode must be one of {RESIZE_MODES}, not {mode!r}")
    new_size, (left, top) = center_crop_plan(image.size, size)
    if new_size[0] * new_size[1] <= MAX_INTERMEDIATE_SQUARES * size * size:
        return image.resize(new_size, resample).crop((left, top, left + size, top + size))
    return image.resize((size, size), resample, box=center_crop_box(image.size, size))


def center_crop_plan(image_size: tuple[int, int], size: int = SPEC.input_size
                     ) -> tuple[tuple[int, int], tuple[int, int]]:
    """The centre crop of an image of ``image_size`` (width, height): the size the whole
    image is resized to, and where the crop's top-left corner falls in that."""
    short = SPEC.shorter_side(size)
    width, height = image_size
    if width <= height:
        new_size = (short, max(size, int(height * short / width)))
    else:
        new_size = (max(size, int(width * short / height)), short)
    return new_size, (round((new_size[0] - size) / 2.0), round((new_size[1] - size) / 2.0))


def center_crop_box(image_size: tuple[int, int], size: int = SPEC.input_size
                    ) -> tuple[float, float, float, float]:
    """The region of an image of ``image_size`` that the centre crop keeps, in the image's
    own pixel coordinates: (left, top, right, bottom), pixel edges, as Pillow's ``box``."""
    (new_width, new_height), (left, top) = center_crop_plan(image_size, size)
    x_scale, y_scale = image_size[0] / new_width, image_size[1] / new_height
    return (left * x_scale, top * y_scale, (left + size) * x_scale, (top + size) * y_scale)


def to_input(pixels: Image.Image | np.ndarray) -> np.ndarray:
    """RGB pixels (an image, or uint8 arrays of any leading shape) as float32 scaled to
    [-1, 1] (x / 127.5 - 1)."""
    import numpy as np

    return np.asarray(pixels, dtype=np.float32) / np.float32(127.5) - np.float32(1.0)


def prepare(path: str | os.PathLike, preprocessing: Preprocessing = Preprocessing(),
            data: bytes | None = None) -> Image.Image:
    """Read ``path`` (or the image ``data`` it names) into the network's input image:
    299x299 RGB, not yet scaled."""
    image = open_rgb(path, preprocessing.max_pixels, draft=preprocessing, data=data)
    return resize(image, preprocessing.resize, preprocessing.interpolation)


def decode(path: str | os.PathLike, preprocessing: Preprocessing = Preprocessing()
           ) -> np.ndarray:
    """``prepare``'s image as a 299x299x3 uint8 array."""
    import numpy as np

    return np.asarray(prepare(path, preprocessing), dtype=np.uint8)


def load_input(path: str | os.PathLike, mode: str = SPEC.default_resize,
               interpolation: str = SPEC.default_interpolation,
               max_pixels: int | None = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """Read ``path`` straight into one network input (299x299x3 float32 in [-1, 1])."""
    return to_input(decode(path, Preprocessing(mode, interpolation, max_pixels)))
