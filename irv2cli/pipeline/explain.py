"""Where the network looks: a Grad-CAM heatmap (see ``network.gradcam``) blended over
each image at its own size and saved as PNG, with the image's top-k (``irv2 explain``).

>>> from irv2cli import ExplainOptions, explain
>>> explain(["cat.jpg"], "cam.png", ExplainOptions(class_index=281))   # tabby
>>> explain(["photos/"], "cams/", on_image=print)     # cams/NAME.cam.png per image

The network's input is decoded in the isolated decoding workers, within their limits,
while the Keras model loads; only an image that decoded there is then opened full-size
in this process for the picture, within the pixel limit. Grad-CAM needs gradients, so
this runs the Keras model (TensorFlow), never the fast runtime.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import ImageError, Irv2Error
from ..inputs.decoding import DecodedInOrder, DecodeLimits, DecodePool, Outcome, default_workers
from ..inputs.images import Preprocessing, open_rgb, to_input
from ..results.heatmaps import output_plan, overlay, save_png, seen_region
from ..results.labels import Prediction, decode_top_k
from .job import Notify

TRACE_FROM = 3  # images from which tracing the network into a graph pays (network.gradcam)
AHEAD = 4  # images decoded ahead of the one being explained


@dataclass(frozen=True)
class ExplainOptions:
    """The weights (default: the official file, fetched if missing), the class to
    explain (``class_index``; default: each image's top class), how many classes each
    image's ``predictions`` hold, how images are decoded (``preprocessing``,
    ``decode_limits``, ``workers``: default one per core, at least 2, no more than the
    images), and whether existing heatmap files are replaced (``force``)."""

    weights: Path | None = None
    class_index: int | None = None
    top_k: int = 5
    preprocessing: Preprocessing = field(default_factory=Preprocessing)
    decode_limits: DecodeLimits = field(default_factory=DecodeLimits)
    workers: int | None = None
    force: bool = False


@dataclass(frozen=True)
class Explained:
    """One image: where its heatmap goes (``heatmap``), and either its top-k
    ``predictions`` and the ``class_index`` explained, or the ``error`` that stopped it."""

    path: str
    heatmap: Path
    predictions: list[Prediction] = field(default_factory=list)
    class_index: int | None = None
    error: Irv2Error | None = None


@dataclass(frozen=True)
class ExplainSummary:
    explained: int
    failed: int


def explain(inputs: Iterable[str | os.PathLike], output: str | os.PathLike | None = None,
            options: ExplainOptions = ExplainOptions(), *,
            notify: Notify = lambda message: None,
            on_image: Callable[[Explained], None] | None = None) -> ExplainSummary:
    """Explain each image of ``inputs`` (files, and folders walked without their own
    ``*.cam.png``) into ``output``: for one image, a ``.png`` file; otherwise a folder
    (default: the current one) that gets ``NAME.cam.png`` per image, a folder input's
    subfolders mirrored. An existing heatmap file is refused before anything is loaded
    (``OutputError``) unless ``options.force``. An image that cannot be explained costs
    its own ``Explained.error``, never the others. ``on_image`` hears each image in
    order; ``notify`` hears status messages."""
    plan = output_plan([os.fspath(path) for path in inputs], output, options.force)
    if not plan:
        return ExplainSummary(0, 0)
    workers = min(options.workers or default_workers(), len(plan))
    explained = failed = 0
    with DecodePool(workers, options.decode_limits) as pool, DecodedInOrder(
            plan, lambda item: pool.submit(item[0], options.preprocessing), AHEAD) as decoded:
        explainer = _explainer(options.weights, len(plan) >= TRACE_FROM, notify)
        for (path, target), outcome in decoded:
            try:
                result = _explain_one(explainer, path, target, outcome, options)
                explained += 1
            except Irv2Error as exc:
                result = Explained(path, target, error=exc)
                failed += 1
            if on_image is not None:
                on_image(result)
    return ExplainSummary(explained, failed)


def _explainer(weights: Path | None, traced: bool, notify: Notify):
    """The Grad-CAM explainer for ``weights`` (default: the official file, fetched)."""
    from ..network.gradcam import Explainer
    from ..store.weights import ensure_weights

    weights = weights or ensure_weights(notify=notify)
    notify("loading the Keras model...")
    return Explainer.from_weights(weights, traced)


def _explain_one(explainer, path: str, target: Path, decoded: Outcome,
                 options: ExplainOptions) -> Explained:
    """Explain one decoded image: its heatmap PNG to ``target``; the full-size image is
    opened here, within the pixel limit."""
    if isinstance(decoded, str):
        raise ImageError(decoded)
    cam = explainer.explain(to_input(decoded.pixels), options.class_index)
    image = open_rgb(path, options.preprocessing.max_pixels)
    region = seen_region(image.size, options.preprocessing.resize)
    save_png(overlay(image, cam.heatmap, region), target, options.force)
    return Explained(path, target, decode_top_k(cam.probabilities, options.top_k),
                     cam.class_index)
