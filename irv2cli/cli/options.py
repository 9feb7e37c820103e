"""Option bundles shared by the commands that read images and write runs."""

from __future__ import annotations

import functools
import math
from pathlib import Path

import click

from ..spec import (
    BACKENDS,
    DEFAULT_MAX_PIXELS,
    INTERPOLATIONS,
    PRECISIONS,
    RESIZE_MODES,
    RUNNERS,
    SPEC,
)

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
        if not math.isfinite(size) or size < 1:
            self.fail(f"{value!r} is not a size like 2GiB, 512MiB or 1073741824", param, ctx)
        return int(size)


class Seconds(click.ParamType):
    """A finite number of seconds (or other unit) from ``low`` to ``high``: unlike
    ``click.FloatRange``, it refuses ``nan`` and ``inf``."""

    name = "seconds"

    def __init__(self, low: float, high: float, low_open: bool = False):
        self.low, self.high, self.low_open = low, high, low_open

    def convert(self, value, param, ctx) -> float:
        try:
            number = float(value)
        except (TypeError, ValueError):
            number = math.nan
        above = number > self.low if self.low_open else number >= self.low
        if not (math.isfinite(number) and above and number <= self.high):
            bound = ">" if self.low_open else ">="
            self.fail(f"{value!r} is not a number {bound} {self.low:g} and <= {self.high:g}",
                      param, ctx)
        return number


def check_precision_backend(precision: str, backend: str) -> None:
    """A usage error for ``--precision int8`` with ``--backend keras``, which cannot run."""
    if precision == "int8" and backend == "keras":
        raise click.UsageError("--precision int8 runs on the onnx backend; the keras "
                               "backend computes in fp32 only.")


def examples(*commands: str) -> str:
    """A command's ``--help`` epilog: ``commands`` as typed, one a line, after the options."""
    return "\b\nExamples:\n" + "\n".join(f"  {command}" for command in commands)


def bundle(*options):
    """A decorator applying ``options`` in the order given (as they show in --help)."""
    return lambda command: functools.reduce(lambda f, option: option(f), reversed(options),
                                            command)


weights_option = click.option(
    "--weights", type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="A weights file: official-layout .h5 or Keras 3 .weights.h5. "
         "Default: the official ImageNet weights, downloaded on first use.")

preprocessing_options = bundle(
    click.option("--resize", type=click.Choice(RESIZE_MODES), default=SPEC.default_resize,
                 show_default=True,
                 help="center-crop: shorter side to 333 px, then the centre 299x299 (timm's "
                      "recipe). squash: straight to 299x299 like keras.utils.load_img."),
    click.option("--interpolation", type=click.Choice(INTERPOLATIONS),
                 default=SPEC.default_interpolation, show_default=True,
                 help="Resampling filter for the resize."),
    click.option("--max-pixels", type=click.IntRange(min=1), envvar="IRV2_MAX_PIXELS",
                 default=DEFAULT_MAX_PIXELS, show_default=True,
                 help="Refuse images larger than this many pixels (decompression bombs). "
                      "Env: IRV2_MAX_PIXELS."),
)
"""--resize, --interpolation and --max-pixels, for every command that reads images."""

def decode_options(what: str, refused: str):
    """--workers, --decode-memory and --decode-timeout (each with its env var), for every
    command that decodes images in isolated workers: ``what`` they decode, and what
    happens to a file that goes past a limit (``refused``)."""
    return bundle(
        click.option("--workers", type=click.IntRange(1, 256),
                     help=f"Processes decoding {what}. Default: one per core (>= 2)."),
        click.option("--decode-memory", type=ByteSize(), default="2GiB", show_default=True,
                     envvar="IRV2_DECODE_MEMORY",
                     help=f"Memory one file may take to decode (Linux); a file that needs "
                          f"more {refused}. Env: IRV2_DECODE_MEMORY."),
        click.option("--decode-timeout", type=Seconds(0, 24 * 3600, low_open=True),
                     default=30.0, show_default=True, envvar="IRV2_DECODE_TIMEOUT",
                     metavar="SECONDS",
                     help=f"Time one file may take to decode; a slower one {refused}. "
                          "Env: IRV2_DECODE_TIMEOUT."),
    )


engine_options = bundle(
    click.option("--backend", type=click.Choice(BACKENDS), default="auto", show_default=True,
                 envvar="IRV2_BACKEND",
                 help="onnx: ONNX Runtime on an artifact built once per weights file and "
                      "cached (no TensorFlow at run time); keras: the reference Keras model; "
                      "auto: onnx. Env: IRV2_BACKEND."),
    click.option("--precision", type=click.Choice(PRECISIONS), default="fp32",
                 show_default=True, envvar="IRV2_PRECISION",
                 help="fp32: the network as trained (exact); int8: the onnx backend on the "
                      "int8 runtime that `irv2 quantize` builds from your own photos, "
                      "about 3x faster on CPUs with VNNI or AMX. Env: IRV2_PRECISION."),
    weights_option,
)
"""--backend, --precision and --weights: the engine a command runs."""

runner_options = bundle(
    click.option("--runner", type=click.Choice(RUNNERS), envvar="IRV2_RUNNER",
                 show_default="local",
                 help="Where the run goes. local: this machine; ray: a Ray cluster with Ray "
                      "Data (pip install 'irv2cli[ray]'), which can also write a folder of "
                      "Parquet shards (--output DIR/ or a URI). Env: IRV2_RUNNER."),
    # The first spelling, kept working: "engine" now names what --backend chooses.
    click.option("--engine", "old_runner", type=click.Choice(RUNNERS), envvar="IRV2_ENGINE",
                 hidden=True),
    click.option("--ray-address", metavar="ADDR", envvar="RAY_ADDRESS",
                 help="With --runner ray: the cluster to join (HOST:PORT of its head). "
                      "Default: start a Ray instance on this machine. Env: RAY_ADDRESS."),
    click.option("--actors", type=click.IntRange(1, 4096),
                 help="With --runner ray: processes running the network. Default: one per "
                      "node."),
    click.option("--ray-node-ip", metavar="ADDR", envvar="IRV2_RAY_NODE_IP",
                 help="With --runner ray: this machine's address as the cluster sees it (as "
                      "`ray start --node-ip-address`). Default: Ray's guess. "
                      "Env: IRV2_RAY_NODE_IP."),
)
"""--runner and where a Ray run goes, for every command that runs over inputs."""

run_options = bundle(
    click.option("--resume", is_flag=True,
                 help="Continue an interrupted run: process only inputs not yet in --output."),
    click.option("--overwrite", is_flag=True, help="Replace an existing --output file."),
    click.option("--recursive/--no-recursive", default=True, show_default=True,
                 help="Descend into subfolders of folder inputs."),
    click.option("--glob", "globs", multiple=True, metavar="PATTERN",
                 help="Only files in folders matching this pattern, e.g. '*.jpg' "
                      "(repeatable)."),
    click.option("--include-hidden", is_flag=True, help="Include hidden files and folders."),
    click.option("--batch-size", type=click.IntRange(1, 1024), default=8, show_default=True,
                 help="Images per inference call."),
    decode_options("images ahead of inference", "gets an error record"),
    click.option("-q", "--quiet", is_flag=True,
                 help="No progress bar and no summary on stderr."),
    click.option("-v", "--verbose", is_flag=True,
                 help="Also print what image decoders warned about (corrupt metadata, short "
                      "reads) for files that were still processed."),
    engine_options,
    preprocessing_options,
    runner_options,
)
"""Everything a run over inputs takes, shared by ``predict`` and ``embed``."""
