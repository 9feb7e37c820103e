"""The feature cache: each image's 1536-d features, kept by its content and what made them.

``irv2 train`` embeds only what the cache lacks, so a second training with other
settings, or after adding ten photos, embeds only the new ones. An entry is found by

- the file's **content** (the xxh3_128 of its bytes): a file changed under the same name
  is a new entry, and copies share one;
- the **setting**: the network weights' key, the precision and the preprocessing (resize
  and interpolation), hashed into the folder name
  ``$IRV2_HOME/features/<setting>/<2 hex>/<content>.f32``.

An entry is a small header, the 1536 float32 values and the xxh3_64 of both: one that
does not check (truncated, damaged) is a miss, so the image is embedded again and the
entry rewritten. Entries are written whole (staged beside, then renamed), so two
processes filling the same cache at once only ever write the same bytes, and a reader
sees a whole entry or none: no lock is needed. No entry is ever fsynced: after a power
loss an entry may be lost or damaged, which only costs embedding that image again.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import xxhash

from ..spec import SPEC
from .weights import cache_dir

MAGIC = b"irv2feat\x01\x00\x00\x00"  # 8 bytes of name, the format (1), padding
DIM = SPEC.feature_dim
ENTRY_BYTES = len(MAGIC) + 4 * DIM + 8


def content_key(path: str | os.PathLike) -> str:
    """The xxh3_128 of the file's bytes (``OSError`` if it cannot be read)."""
    from .artifacts import file_checksum

    return file_checksum(Path(path))


@dataclass(frozen=True)
class FeatureCache:
    """The entries for one setting (see the module's description) in ``folder``."""

    folder: Path

    @classmethod
    def for_setting(cls, network: str, precision: str, resize: str,
                    interpolation: str) -> FeatureCache:
        """The cache for features of the weights keyed ``network`` (``network_key``), in
        ``precision``, of images resized by ``resize`` with ``interpolation``."""
        setting = json.dumps({"network": network, "precision": precision, "resize": resize,
                              "interpolation": interpolation, "size": SPEC.input_size},
                             sort_keys=True)
        name = hashlib.sha256(setting.encode()).hexdigest()[:24]
        return cls(cache_dir() / "features" / name)

    def entry(self, key: str) -> Path:
        return self.folder / key[:2] / f"{key}.f32"

    def get(self, key: str) -> np.ndarray | None:
        """The features of the content ``key``, or ``None`` if there are none that check."""
        try:
            data = self.entry(key).read_bytes()
        except OSError:
            return None
        if (len(data) != ENTRY_BYTES or not data.startswith(MAGIC)
                or xxhash.xxh3_64_digest(data[:-8]) != data[-8:]):
            return None
        features = np.frombuffer(data, "<f4", DIM, len(MAGIC)).astype(np.float32)
        return features if np.isfinite(features).all() else None

    def put(self, key: str, features: np.ndarray) -> None:
        """Keep ``features`` for the content ``key``, whole (a reader sees all or none)."""
        body = MAGIC + np.asarray(features, "<f4").reshape(DIM).tobytes()
        target = self.entry(key)
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, staged = tempfile.mkstemp(prefix=f".{key}.", suffix=".tmp", dir=target.parent)
        try:
            with os.fdopen(fd, "wb") as stream:
                stream.write(body + xxhash.xxh3_64_digest(body))
            os.replace(staged, target)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(staged)
            raise
