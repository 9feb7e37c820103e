"""``irv2 explain``: a Grad-CAM heatmap per image, over the photo, saved as PNG."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import click

from ..errors import ClassLookupError, Irv2Error
from ..spec import SPEC
from .options import examples, preprocessing_options, weights_option

if TYPE_CHECKING:
    from rich.console import Console

    from ..inputs.decoding import Outcome
    from ..inputs.images import Preprocessing
    from ..network.gradcam import Explainer

TRACE_FROM = 3  # images from which tracing the network into a graph pays (network.gradcam)
AHEAD = 4  # images decoded ahead of the one being explained


class ClassParam(click.ParamType):
    """A class by WordNet ID, index or label (``results.labels.find_class``)."""

    name = "class"

    def convert(self, value, param, ctx):
        from ..results.labels import ClassLabel, find_class

        if isinstance(value, ClassLabel):
            return value
        try:
            return find_class(value)
        except ClassLookupError as exc:
            self.fail(exc.message, param, ctx)


@click.command(epilog=examples(
    "irv2 explain cat.jpg --class tabby -o cam.png",
    "irv2 explain photos/ -o cams/"))
@click.argument("inputs", nargs=-1, required=True, type=click.Path(path_type=str))
@click.option("--class", "wanted", type=ClassParam(), metavar="WNID|INDEX|LABEL",
              help="Explain this class: a WordNet ID (n02123045), an index (0-999) or a "
                   "label (tabby). Default: each image's top class.")
@click.option("-o", "--output", type=click.Path(path_type=Path),
              help="For one image, a .png file; otherwise a folder for one NAME.cam.png per "
                   "image (a folder input's subfolders mirrored). Default: the current "
                   "folder.")
@click.option("-k", "--top-k", type=click.IntRange(1, SPEC.num_classes), default=5,
              show_default=True, help="How many classes to print per image.")
@click.option("--force", is_flag=True, help="Replace existing heatmap files.")
@weights_option
@preprocessing_options
def explain(inputs, wanted, output, top_k, force, weights, resize, interpolation, max_pixels):
    """Show where the network looks: a Grad-CAM heatmap over each image.

    Grad-CAM (Selvaraju et al.) of the class's logit at the last convolutional block
    (conv_7b_ac, 8x8), blended over the upright image at its own size, on the region the
    network saw (with center-crop, the crop; the rest is dimmed). Prints the top-k table
    of each image. Needs gradients, so it runs the Keras model: it takes longer to start
    than predict (TensorFlow and the model load first, about 10 s). The network's input
    is decoded in an isolated worker process, as in predict; the full-size image for the
    picture is then decoded in this process, within --max-pixels. A folder's *.cam.png
    files are skipped: they are explain's own output. Exit status: 0 all explained, 1 some
    image failed, 2 usage error.
    """
    from ..inputs.images import Preprocessing
    from ..results.heatmaps import output_plan

    if output is not None and output.suffix.lower() == ".png" and not output.is_dir() and (
            len(inputs) > 1 or Path(inputs[0]).is_dir()):
        raise click.UsageError("several images need an output folder, not a .png file.")
    plan = output_plan(inputs, output, force)
    if not plan:
        raise click.UsageError("no image files in the inputs.")
    preprocessing = Preprocessing(resize, interpolation, max_pixels)
    failed = _explain_all(plan, preprocessing, weights, wanted, top_k, force)
    click.get_current_context().exit(1 if failed else 0)


def _explain_all(plan, preprocessing, weights, wanted, top_k, force) -> int:
    """Decode ``plan``'s images in worker processes (a few ahead) while the network loads,
    then explain each in turn; return how many failed."""
    from ..inputs.decoding import DecodedInOrder, DecodePool
    from .advice import user_message
    from .render import stderr_console

    console, failed = stderr_console(), 0
    with DecodePool(min(2, len(plan))) as pool, DecodedInOrder(
            plan, lambda item: pool.submit(item[0], preprocessing), AHEAD) as decoded:
        explaining = _Explaining(_load(weights, len(plan) >= TRACE_FROM, console),
                                 preprocessing, None if wanted is None else wanted.index,
                                 top_k, force, console)
        for (path, target), outcome in decoded:
            try:
                explaining.one(path, target, outcome)
            except Irv2Error as exc:
                console.print(f"error: {user_message(exc)}", style="red")
                failed += 1
    return failed


def _load(weights: Path | None, traced: bool, console: Console) -> Explainer:
    """The Grad-CAM explainer for ``weights`` (default: the official file, fetched)."""
    from ..network.gradcam import Explainer
    from .official import official_weights

    if weights is None:
        weights = official_weights(console)
    console.print("loading the Keras model...", style="dim")
    return Explainer.from_weights(weights, traced)


@dataclass(frozen=True)
class _Explaining:
    """What explaining each image takes: the explainer and the command's options."""

    explainer: Explainer
    preprocessing: Preprocessing
    class_index: int | None
    top_k: int
    force: bool
    console: Console

    def one(self, path: str, target: Path, decoded: Outcome) -> None:
        """Explain one decoded image: the heatmap PNG to ``target``, the top-k table to
        stdout; the full-size image is opened here, within the pixel limit."""
        from rich.console import Console

        from ..errors import ImageError
        from ..inputs.images import open_rgb, to_input
        from ..results.heatmaps import overlay, save_png, seen_region
        from ..results.labels import decode_top_k, imagenet_labels
        from ..results.records import Record
        from ..results.writers import shown
        from .render import prediction_table

        if isinstance(decoded, str):
            raise ImageError(decoded)
        cam = self.explainer.explain(to_input(decoded.pixels), self.class_index)
        image = open_rgb(path, self.preprocessing.max_pixels)
        region = seen_region(image.size, self.preprocessing.resize)
        save_png(overlay(image, cam.heatmap, region), target, self.force)
        Console(markup=False).print(
            prediction_table(Record(path, decode_top_k(cam.probabilities, self.top_k))))
        explained = imagenet_labels()[cam.class_index]
        self.console.print(f"{explained.label} ({explained.wnid}) -> {shown(target)}")
