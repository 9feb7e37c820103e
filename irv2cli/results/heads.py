"""Head files: a classifier of the user's own classes on the network's 1536-d features.

A head is multinomial logistic regression, ``softmax(features @ weights.T + bias)``,
stored as one self-describing ``.npz`` file (a zip of NumPy arrays) with three members:

- ``weights``: (C, 1536) float32, one row per class;
- ``bias``: (C,) float32;
- ``metadata``: the UTF-8 bytes of a JSON object (as a uint8 array): ``format``
  (``"irv2-head"``), ``format_version``, ``classes`` (the class names, in output
  order), ``network`` (the key of the weights the features came from, the precision),
  ``preprocessing``, ``training`` (what ``irv2 train`` measured) and ``irv2_version``.

It is read with ``np.load(allow_pickle=False)``: loading a head runs no code, so heads
can be shared. Every member is checked (zip CRCs, shapes, finite values, the JSON), and
a file that is not a head, is damaged or truncated, or was trained on other network
weights is refused in one ``HeadError``. Nothing here imports TensorFlow, Keras or
scikit-learn: a head is plain NumPy.
"""

from __future__ import annotations

import io
import json
import os
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import xxhash

from ..errors import HeadError, Hint
from ..spec import SPEC
from ..store.atomic import atomic_file
from ..version import __version__
from .labels import ClassLabel
from .writers import shown, write_error

if TYPE_CHECKING:
    from ..inputs.images import Preprocessing

HEAD_FORMAT = "irv2-head"
HEAD_FORMAT_VERSION = 1
MEMBERS = frozenset({"weights", "bias", "metadata"})
TAG_PREFIX = "head:"  # what a head's classes carry where ImageNet's carry a WordNet ID


@dataclass(frozen=True)
class Head:
    """A trained head: ``weights`` (C, 1536) and ``bias`` (C,), float32; ``classes`` the
    class names in output order; ``metadata`` everything else the file records."""

    weights: np.ndarray = field(repr=False)
    bias: np.ndarray = field(repr=False)
    classes: tuple[str, ...]
    metadata: dict = field(default_factory=dict, repr=False, compare=False)

    @property
    def identity(self) -> str:
        """16 hex digits that tell this head from any other: the xxh3_64 of its weights,
        bias and class names."""
        digest = xxhash.xxh3_64()
        digest.update(np.ascontiguousarray(self.weights, "<f4").tobytes())
        digest.update(np.ascontiguousarray(self.bias, "<f4").tobytes())
        digest.update(json.dumps(self.classes, ensure_ascii=False).encode("utf-8",
                                                                          "surrogatepass"))
        return digest.hexdigest()

    @property
    def tag(self) -> str:
        """What each of this head's predictions records in place of a WordNet ID
        (``head:`` and the first 12 digits of ``identity``), so a results file tells which
        head wrote it."""
        return TAG_PREFIX + self.identity[:12]

    @property
    def labels(self) -> tuple[ClassLabel, ...]:
        """The classes as the records' labels: index, this head's ``tag``, name."""
        return tuple(ClassLabel(i, self.tag, name) for i, name in enumerate(self.classes))

    @property
    def network(self) -> str:
        """The key of the network weights whose features the head was trained on."""
        return self.metadata.get("network", {}).get("weights", "")

    def logits(self, features: np.ndarray) -> np.ndarray:
        """(N, C) scores before the softmax, for (N, 1536) features, in float32."""
        return np.asarray(features, np.float32) @ self.weights.T + self.bias

    def probabilities(self, features: np.ndarray) -> np.ndarray:
        """(N, C) class probabilities for (N, 1536) features: the softmax of ``logits``."""
        logits = self.logits(features)
        exp = np.exp(logits - logits.max(axis=1, keepdims=True))
        return exp / exp.sum(axis=1, keepdims=True)

    def check_network(self, key: str, path: str | os.PathLike = "the head") -> None:
        """``HeadError`` unless the head was trained on the features of the weights whose
        key (``store.artifacts.network_key``) is ``key``."""
        if self.network != key:
            raise HeadError(f"{shown(path)} was trained on the features of other network "
                            f"weights ({self.network or 'unknown'}, not {key}), so its "
                            "scores would mean nothing here", Hint.HEAD_WEIGHTS)


def preprocessing_record(preprocessing: Preprocessing) -> dict[str, str]:
    """What a head records of the preprocessing its features were made with, and what a
    run with the head is compared on: the resize and its interpolation."""
    return {"resize": preprocessing.resize, "interpolation": preprocessing.interpolation}


def head_metadata(classes: tuple[str, ...], network: str, *, precision: str,
                  preprocessing: dict, training: dict) -> dict:
    """The metadata a new head records (see the module's description)."""
    return {"format": HEAD_FORMAT, "format_version": HEAD_FORMAT_VERSION,
            "classes": list(classes),
            "network": {"weights": network, "feature_dim": SPEC.feature_dim,
                        "precision": precision},
            "preprocessing": preprocessing, "training": training,
            "irv2_version": __version__}


def save_head(head: Head, path: str | os.PathLike) -> None:
    """Write ``head`` to ``path`` whole or not at all (staged beside it, then renamed): a
    full disk or an interrupt leaves ``path`` as it was. A failed write is one
    ``OutputError``."""
    path = Path(path)
    metadata = json.dumps(head.metadata, ensure_ascii=False, sort_keys=True).encode("utf-8")
    try:
        with atomic_file(path) as stream:
            buffer = io.BytesIO()  # np.savez seeks; the staged file need not
            np.savez(buffer, weights=np.asarray(head.weights, "<f4"),
                     bias=np.asarray(head.bias, "<f4"),
                     metadata=np.frombuffer(metadata, np.uint8))
            stream.write(buffer.getvalue())
    except OSError as exc:
        raise write_error(str(path), exc) from None


def load_head(path: str | os.PathLike) -> Head:
    """The head in ``path``, checked whole; ``HeadError`` for a file that cannot be read,
    is not a head, or is damaged or truncated."""
    try:
        loaded = np.load(path, allow_pickle=False)
        if not isinstance(loaded, np.lib.npyio.NpzFile):
            raise _not_a_head(path, "it is one NumPy array, not a head's three")
        with loaded as members:
            if set(members.files) != MEMBERS:
                raise _not_a_head(path, "it does not hold a head's three arrays")
            weights, bias = members["weights"], members["bias"]
            metadata = json.loads(bytes(members["metadata"]).decode("utf-8"))
    except HeadError:
        raise
    except FileNotFoundError:
        raise HeadError(f"{shown(path)}: no such head file", Hint.HEAD_FILE) from None
    except IsADirectoryError:
        raise HeadError(f"{shown(path)} is a folder, not a head file", Hint.HEAD_FILE) from None
    except zipfile.BadZipFile as exc:
        raise _not_a_head(path, f"damaged or truncated ({exc})") from None
    except (ValueError, OSError, EOFError, KeyError, UnicodeDecodeError) as exc:
        if isinstance(exc, OSError) and exc.errno is not None:
            raise HeadError(f"{shown(path)}: cannot read the head ({exc.strerror})",
                            Hint.HEAD_FILE) from None
        raise _not_a_head(path, "damaged or truncated, or another kind of file") from None
    return _checked(path, weights, bias, metadata)


def _not_a_head(path: str | os.PathLike, why: str) -> HeadError:
    return HeadError(f"{shown(path)} is not a usable head: {why}", Hint.HEAD_FILE)


def _checked(path, weights: np.ndarray, bias: np.ndarray, metadata) -> Head:
    """The head made of the members read, if each is what a head holds."""
    if not isinstance(metadata, dict) or metadata.get("format") != HEAD_FORMAT:
        raise _not_a_head(path, "its metadata does not say it is one")
    version = metadata.get("format_version")
    if version != HEAD_FORMAT_VERSION:
        raise HeadError(f"{shown(path)} is a head of format {version}, which irv2 "
                        f"{__version__} does not read (it reads format {HEAD_FORMAT_VERSION})",
                        Hint.HEAD_FILE)
    classes = metadata.get("classes")
    if (not isinstance(classes, list) or len(classes) < 2
            or not all(isinstance(name, str) and name for name in classes)
            or len(set(classes)) != len(classes)):
        raise _not_a_head(path, "its class names are missing or repeated")
    count = len(classes)
    if (weights.dtype != np.float32 or bias.dtype != np.float32
            or weights.shape != (count, SPEC.feature_dim) or bias.shape != (count,)):
        raise _not_a_head(path, f"its arrays are not ({count}, {SPEC.feature_dim}) and "
                                f"({count},) float32")
    if not (np.isfinite(weights).all() and np.isfinite(bias).all()):
        raise _not_a_head(path, "its weights are not finite")
    return Head(weights, bias, tuple(classes), metadata)
