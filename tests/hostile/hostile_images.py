"""A test-only Pillow plugin whose "decoder" misbehaves on purpose, as real ones do.

A file that starts with ``MAGIC`` and a behaviour name opens as an 8x8 image after the
behaviour: ``segfault`` crashes the process (SIGSEGV), ``allocate`` asks for 4 GiB,
``sleep`` hangs, ``raise`` throws an exception no decoder is expected to throw, and
``warn`` emits a Python warning and C-library noise on stderr, then decodes fine.
Decoding worker processes load it through ``sitecustomize.py`` beside this file.
"""

from __future__ import annotations

import ctypes
import os
import time
import warnings
from pathlib import Path

from PIL import Image, ImageFile

MAGIC = b"IRV2-HOSTILE "
BEHAVIOURS = ("segfault", "allocate", "sleep", "raise", "warn")


def write(path: Path, behaviour: str) -> Path:
    """A file that makes this plugin's decoder ``behaviour``."""
    assert behaviour in BEHAVIOURS
    path.write_bytes(MAGIC + behaviour.encode() + b"\n")
    return path


def _misbehave(behaviour: str) -> None:
    if behaviour == "segfault":
        ctypes.string_at(0)
    elif behaviour == "allocate":
        bytearray(4 << 30)
    elif behaviour == "sleep":
        time.sleep(3600)
    elif behaviour == "raise":
        raise RuntimeError("hostile decoder: something no decoder is expected to raise")
    elif behaviour == "warn":
        warnings.warn("hostile decoder: corrupt metadata", UserWarning, stacklevel=1)
        os.write(2, b"TIFFFillStrip: hostile C-library noise\n")


class HostileImageFile(ImageFile.ImageFile):
    format = "HOSTILE"
    format_description = "test-only misbehaving decoder"

    def _open(self) -> None:
        _misbehave(self.fp.read(64)[len(MAGIC):].split()[0].decode())
        self._size = (8, 8)
        self._mode = "RGB"

    def load(self):
        if self._im is None:
            self.im = Image.core.fill("RGB", self.size, (200, 120, 40))
        return Image.Image.load(self)


Image.register_open(HostileImageFile.format, HostileImageFile,
                    lambda prefix: prefix.startswith(MAGIC))
