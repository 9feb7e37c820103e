"""The ``irv2`` command: parse, call the library, render. TensorFlow loads only when needed."""

from __future__ import annotations

import functools
import os
from pathlib import Path

import click

from ..errors import Irv2Error
from ..spec import BACKENDS, DEFAULT_MAX_PIXELS, EXPORT_FORMATS, INTERPOLATIONS, RESIZE_MODES, SPEC
from ..version import __version__
from .advice import user_message
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


def preprocessing_options(command):
    """--resize, --interpolation and --max-pixels, shared by commands that read images."""
    options = [
        click.option("--resize", type=click.Choice(RESIZE_MODES), default=SPEC.default_resize,
                     show_default=True,
                     help="center-crop: shorter side to 333 px, then the centre 299x299 "
                          "(timm's recipe). squash: straight to 299x299 like "
                          "keras.utils.load_img."),
        click.option("--interpolation", type=click.Choice(INTERPOLATIONS),
                     default=SPEC.default_interpolation, show_default=True,
                     help="Resampling filter for the resize."),
        click.option("--max-pixels", type=click.IntRange(min=1), envvar="IRV2_MAX_PIXELS",
                     default=DEFAULT_MAX_PIXELS, show_default=True,
                     help="Refuse images larger than this many pixels (decompression bombs). "
                          "Env: IRV2_MAX_PIXELS."),
    ]
    return functools.reduce(lambda f, option: option(f), reversed(options), command)


SIZE_UNITS = {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40}


class ByteSize(click.ParamType):
    """A size such as ``2GiB``, ``1.5G``, ``512MiB`` or a plain number, as bytes (binary
    units)."""

    name = "size"

    def convert(self, value, param, ctx) -> int:
        if isinstance(value, int):
            return value
        number = value.strip().lower().removesuffix("b").removesuffix("i")
        unit = number[-1:] if number[-1:] in SIZE_UNITS else ""
        try:
            size = float(number.removesuffix(unit)) * SIZE_UNITS[unit]
        except ValueError:
            size = 0
        if size < 1:
            self.fail(f"{value!r} is not a size like 2GiB, 512MiB or 1073741824", param, ctx)
        return int(size)


weights_option = click.option(
    "--weights", type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="A weights file: official-layout .h5 or Keras 3 .weights.h5. "
         "Default: the official ImageNet weights, downloaded on first use.")


@cli.command()
@click.argument("inputs", nargs=-1, required=True, type=click.Path(path_type=str))
@click.option("-k", "--top-k", type=click.IntRange(1, SPEC.num_classes), default=5,
              show_default=True, help="How many classes to report per image.")
@weights_option
@click.option("--format", "fmt", type=click.Choice(("table", "json", "jsonl", "csv")),
              help="Output format. Default: table on stdout, or from --output's extension.")
@click.option("-o", "--output", type=click.Path(dir_okay=False, path_type=Path),
              help="Write results to this .csv/.jsonl/.json file as the run goes.")
@click.option("--resume", is_flag=True,
              help="Continue an interrupted run: classify only images not yet in --output.")
@click.option("--overwrite", is_flag=True, help="Replace an existing --output file.")
@click.option("--recursive/--no-recursive", default=True, show_default=True,
              help="Descend into subfolders of folder inputs.")
@click.option("--glob", "globs", multiple=True, metavar="PATTERN",
              help="Only files in folders matching this pattern, e.g. '*.jpg' (repeatable).")
@click.option("--include-hidden", is_flag=True, help="Include hidden files and folders.")
@click.option("--batch-size", type=click.IntRange(1, 1024), default=8, show_default=True,
              help="Images per inference call.")
@click.option("--workers", type=click.IntRange(1, 256),
              help="Processes decoding images ahead of inference. Default: one per core (>= 2).")
@click.option("--decode-memory", type=ByteSize(), default="2GiB", show_default=True,
              envvar="IRV2_DECODE_MEMORY",
              help="Memory one file may take to decode (Linux); a file that needs more gets "
                   "an error record. Env: IRV2_DECODE_MEMORY.")
@click.option("--decode-timeout", type=click.FloatRange(min=0, min_open=True), default=30.0,
              show_default=True, envvar="IRV2_DECODE_TIMEOUT", metavar="SECONDS",
              help="Time one file may take to decode; a slower one gets an error record. "
                   "Env: IRV2_DECODE_TIMEOUT.")
@click.option("-q", "--quiet", is_flag=True, help="No progress bar and no summary on stderr.")
@click.option("-v", "--verbose", is_flag=True,
              help="Also print what image decoders warned about (corrupt metadata, short "
                   "reads) for files that were still classified.")
@click.option("--backend", type=click.Choice(BACKENDS), default="auto", show_default=True,
              envvar="IRV2_BACKEND",
              help="onnx: ONNX Runtime on an artifact built once per weights file and cached "
                   "(no TensorFlow at run time); keras: the reference Keras model; auto: onnx. "
                   "Env: IRV2_BACKEND.")
@preprocessing_options
def predict(inputs, top_k, weights, fmt, output, resume, overwrite, recursive, globs,
            include_hidden, batch_size, workers, decode_memory, decode_timeout, quiet, verbose,
            backend, resize, interpolation, max_pixels):
    """Classify image files and folders.

    Prints a top-k table per image, or writes JSON/JSONL/CSV records. Folders are walked
    in sorted order; a file that cannot be classified gets an error record and the run
    goes on. Exit status: 0 all classified, 1 some input failed, 2 usage error.
    """
    if output is None and (resume or overwrite):
        raise click.UsageError("--resume and --overwrite need --output.")
    if output is not None and fmt == "table":
        raise click.UsageError("--output writes csv, jsonl or json; the table is for stdout.")
    from ..pipeline.preload import start_loading

    # A resumed run may have nothing left to do: it loads the engine only when it must.
    engine = None if resume else start_loading(weights, backend, quiet)
    from ..inputs.decoding import DecodeLimits, DecodePool

    limits = DecodeLimits(decode_memory, decode_timeout)
    decoders = None if resume else DecodePool(decoding_workers(inputs, workers), limits)
    from ..pipeline.run import PredictRun

    run = PredictRun(
        inputs=inputs, top_k=top_k, weights=weights, fmt=fmt or ("table" if output is None
                                                                   else None),
        output=output, resume=resume, overwrite=overwrite, recursive=recursive,
        globs=globs, include_hidden=include_hidden, batch_size=batch_size, workers=workers,
        quiet=quiet, resize=resize, interpolation=interpolation, max_pixels=max_pixels,
        backend=backend, decode_limits=limits, verbose=verbose, engine=engine,
        decoders=decoders,
    )
    try:
        status = run.execute()
    finally:
        if decoders is not None:
            decoders.close()
    click.get_current_context().exit(status)


def decoding_workers(inputs: tuple[str, ...], workers: int | None) -> int:
    """``--workers``, else one per core (at least two), but no more than a list of plain
    files needs: one photo starts one worker, which costs the first answer least."""
    from ..inputs.decoding import default_workers

    count = workers or default_workers()
    if not any(os.path.isdir(path) for path in inputs):
        count = min(count, len(inputs))
    return count


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
