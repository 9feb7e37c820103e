"""``irv2 explain``: a Grad-CAM heatmap per image, over the photo, saved as PNG."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import click

from ..errors import ClassLookupError
from ..spec import SPEC
from .options import decode_options, examples, preprocessing_options, weights_option

if TYPE_CHECKING:
    from rich.console import Console

    from ..pipeline.explain import Explained


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
@decode_options("the images", "is an error")
def explain(inputs, wanted, output, top_k, force, weights, resize, interpolation, max_pixels,
            workers, decode_memory, decode_timeout):
    """Show where the network looks: a Grad-CAM heatmap over each image.

    Grad-CAM (Selvaraju et al.) of the class's logit at the last convolutional block
    (conv_7b_ac, 8x8), blended over the upright image at its own size, on the region the
    network saw (with center-crop, the crop; the rest is dimmed). Prints the top-k table
    of each image. Needs gradients, so it runs the Keras model: it takes longer to start
    than predict (TensorFlow and the model load first, about 10 s). The network's input
    is decoded in isolated worker processes, as in predict; the full-size image for the
    picture is then decoded in this process, within --max-pixels. A folder's *.cam.png
    files are skipped: they are explain's own output. Exit status: 0 all explained, 1 some
    image failed, 2 usage error.
    """
    from ..inputs.decoding import DecodeLimits
    from ..inputs.images import Preprocessing
    from ..pipeline.explain import ExplainOptions
    from ..pipeline.explain import explain as explain_images
    from ..results.heatmaps import output_plan
    from .official import official_weights
    from .render import stderr_console

    if output is not None and output.suffix.lower() == ".png" and not output.is_dir() and (
            len(inputs) > 1 or Path(inputs[0]).is_dir()):
        raise click.UsageError("several images need an output folder, not a .png file.")
    # Before the official weights may be fetched: no images, or an existing heatmap file.
    if not output_plan(inputs, output, force):
        raise click.UsageError("no image files in the inputs.")
    console = stderr_console()
    options = ExplainOptions(
        weights=weights or official_weights(console),
        class_index=None if wanted is None else wanted.index, top_k=top_k,
        preprocessing=Preprocessing(resize, interpolation, max_pixels),
        decode_limits=DecodeLimits(decode_memory, decode_timeout), workers=workers,
        force=force)
    summary = explain_images(inputs, output, options, on_image=_Shown(console),
                             notify=lambda message: console.print(message, style="dim"))
    click.get_current_context().exit(1 if summary.failed else 0)


class _Shown:
    """Shows each explained image: its top-k table on stdout and where its heatmap went
    on ``console``, or its error there."""

    def __init__(self, console: Console):
        from rich.console import Console

        self.console, self.stdout = console, Console(markup=False)

    def __call__(self, explained: Explained) -> None:
        from ..results.labels import imagenet_labels
        from ..results.records import Record
        from ..results.writers import shown
        from .advice import user_message
        from .render import print_predictions

        if explained.error is not None:
            self.console.print(f"error: {user_message(explained.error)}", style="red")
            return
        print_predictions(self.stdout, Record(explained.path, explained.predictions))
        label = imagenet_labels()[explained.class_index]
        self.console.print(f"{label.label} ({label.wnid}) -> {shown(explained.heatmap)}")
