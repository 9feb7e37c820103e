"""The ``irv2`` command: parse, call the library, render. TensorFlow loads only when needed."""

from __future__ import annotations

import os
from pathlib import Path

import click

from ..errors import Irv2Error
from ..spec import EXPORT_FORMATS, SPEC
from ..version import __version__
from .advice import user_message
from .embed import embed
from .options import weights_option
from .predict import predict
from .signals import exit_status, stop_on_signals


class Irv2Group(click.Group):
    """Turns the library's errors into one-line messages (exit 1), and an interrupt
    (Ctrl-C, SIGTERM, SIGHUP) into the exit status 128 + its signal, in one place."""

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except Irv2Error as exc:
            raise click.ClickException(user_message(exc)) from None
        except KeyboardInterrupt as exc:
            raise click.exceptions.Exit(exit_status(exc)) from None


@click.group(cls=Irv2Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="irv2")
def cli() -> None:
    """Classify images with Inception-ResNet-V2 (ImageNet, 1000 classes)."""


cli.add_command(predict)
cli.add_command(embed)


@cli.command("download-weights")
@click.option("--include-top/--no-top", default=True, show_default=True,
              help="The full classifier, or the feature extractor without the top.")
@click.option("--mirror", metavar="URL",
              help="Base URL serving the same file name (default: Keras's storage). "
                   "Env: IRV2_MIRROR.")
@click.option("--from-file", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="Install a copy obtained elsewhere, after checking its MD5.")
@click.option("--force", is_flag=True, help="Fetch or install again even if cached.")
def download_weights(include_top, mirror, from_file, force):
    """Fetch and verify the official ImageNet weights into the cache.

    Reuses a verified copy from Keras's cache (~/.keras/models) when there is one.
    The cache is $IRV2_HOME, else the platform's user cache directory.
    """
    from ..store.weights import ensure_weights, install_from_file
    from .render import download_progress, stderr_console

    weight_file = SPEC.weights(include_top)
    console = stderr_console()

    def notify(message: str) -> None:
        console.print(message, style="dim")

    if from_file is not None:
        path = install_from_file(from_file, weight_file, force=force, notify=notify)
    else:
        with download_progress(console, weight_file.filename) as progress:
            path = ensure_weights(include_top, mirror, progress, force=force, notify=notify)
    click.echo(str(path))


@cli.command()
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
@click.option("--force", is_flag=True, help="Replace an existing output.")
def export(fmt, output, weights, include_top, pooling, force):
    """Write the model for another runtime, with its preprocessing contract.

    Beside the artifact goes OUTPUT.preprocessing.json (preprocessing.json inside a
    SavedModel folder): input name, layout, shape, scaling, resize recipe, what the
    output means, and the weights' MD5. Prints the paths written.
    """
    if include_top and pooling is not None:
        raise click.UsageError("--pooling applies only without the top: add --no-top.")
    from ..export.formats import export_model
    from .render import download_progress, stderr_console

    console = stderr_console()
    console.print(f"exporting to {fmt}...", style="dim")
    with download_progress(console, SPEC.weights(include_top).filename) as progress:
        paths = export_model(fmt, output, weights=weights, include_top=include_top,
                             pooling=pooling, force=force, progress=progress)
    for path in paths:
        click.echo(str(path))


def int_list(ctx, param, value: str) -> list[int]:
    try:
        numbers = [int(v) for v in value.split(",") if v.strip()]
    except ValueError:
        raise click.BadParameter("expected comma-separated integers, e.g. 1,8,16") from None
    if any(n < 1 for n in numbers):
        raise click.BadParameter("batch sizes must be at least 1")
    return numbers


@cli.command()
@click.option("--images", type=click.Path(exists=True, file_okay=False, path_type=Path),
              default="samples", show_default=True,
              help="A folder of JPEG photos to cycle through.")
@click.option("--weights", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="Weights to use. Default: seeded random weights generated offline.")
@click.option("--small", type=click.IntRange(1), default=8, show_default=True,
              help="Images in the small folder.")
@click.option("--large", type=click.IntRange(2), default=40, show_default=True,
              help="Images in the large folder.")
@click.option("--batch-sizes", callback=int_list, default="1,8,16", show_default=True,
              help="irv2 batch sizes to measure.")
@click.option("--keras-batch-sizes", callback=int_list, default="1,8", show_default=True,
              help="Plain Keras loop batch sizes to measure.")
@click.option("--cold-runs", type=click.IntRange(1), default=3, show_default=True,
              help="Cold starts of each one-image command (the median is shown).")
@click.option("--rounds", type=click.IntRange(1), default=2, show_default=True,
              help="Rounds over every folder measurement (the median is shown).")
def bench(images, weights, small, large, batch_sizes, keras_batch_sizes, cold_runs, rounds):
    """Measure folder classification against a plain Keras loop on this machine.

    Prints the cold start of `irv2 predict IMAGE` against the plain Keras recipe, then
    images/s (marginal: a small and a large folder, so start-up cancels), the time from
    process start to the first result, and peak RSS, for each pipeline and batch size.
    Uses generated weights and a temporary cache. Takes several minutes.
    """
    from rich.console import Console

    from ..bench.harness import run_benchmark
    from .render import benchmark_table, cold_start_table, stderr_console

    if large <= small:
        raise click.BadParameter("must be larger than --small", param_hint="--large")
    console = stderr_console()
    starts, results = run_benchmark(
        images, weights, small, large, batch_sizes, keras_batch_sizes, cold_runs, rounds,
        progress=lambda message: console.print(message, style="dim"))
    Console().print(cold_start_table(starts))
    Console().print(benchmark_table(results))


def main() -> None:
    """Console-script entry point."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    stop_on_signals()
    cli()
