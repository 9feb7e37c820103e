"""``irv2 export``: the model for another runtime, with its preprocessing contract."""

from __future__ import annotations

from pathlib import Path

import click

from ..spec import EXPORT_FORMATS, SPEC
from .options import examples, weights_option


@click.command(epilog=examples(
    "irv2 export --format onnx -o irv2.onnx",
    "irv2 export --format savedmodel --no-top --pooling avg -o features/",
    "irv2 export --format onnx --head products.head -o products.onnx"))
@click.option("--format", "fmt", required=True, type=click.Choice(EXPORT_FORMATS),
              help="onnx: one .onnx file; openvino: IR .xml + .bin (needs "
                   "pip install 'irv2cli[openvino]'); savedmodel: a TensorFlow SavedModel "
                   "folder; keras: a .keras file.")
@click.option("-o", "--output", required=True, type=click.Path(path_type=Path),
              help="File to write (.xml/.keras is added for openvino/keras when missing), "
                   "or the folder for savedmodel.")
@weights_option
@click.option("--include-top/--no-top", default=True, show_default=True,
              help="The classifier (probabilities), or the feature extractor.")
@click.option("--pooling", type=click.Choice(("avg", "max")),
              help="With --no-top: pool to 1536-d features. Default: the 8x8x1536 map.")
@click.option("--head", type=click.Path(dir_okay=False, path_type=Path),
              help="A head file (`irv2 train`) fused after the features: the output is the "
                   "probabilities of its classes, which the contract names.")
@click.option("--force", is_flag=True, help="Replace an existing output.")
def export(fmt, output, weights, include_top, pooling, head, force):
    """Write the model for another runtime, with its preprocessing contract.

    Beside the artifact goes OUTPUT.preprocessing.json (preprocessing.json inside a
    SavedModel folder): input name, layout, shape, scaling, resize recipe, what the
    output means, and the weights' MD5. Prints the paths written.
    """
    if include_top and pooling is not None:
        raise click.UsageError("--pooling applies only without the top: add --no-top.")
    if head is not None and not include_top:
        raise click.UsageError("--head replaces the top with your classes: drop --no-top.")
    from ..export.formats import export_model
    from .render import download_progress, stderr_console

    console = stderr_console()
    console.print(f"exporting to {fmt}...", style="dim")
    with download_progress(console, SPEC.weights(include_top).filename) as progress:
        paths = export_model(fmt, output, weights=weights, include_top=include_top,
                             pooling=pooling, force=force, progress=progress, head=head)
    for path in paths:
        click.echo(str(path))
