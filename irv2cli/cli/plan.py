"""A run over inputs as its command line asks for it: the flags of ``predict`` and
``embed`` become one ``RunPlan`` right where click has parsed them, each flag mapped in
``run_plan`` and nowhere else."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from ..inputs.uris import is_uri
from ..spec import FEATURES
from .options import check_precision_backend

if TYPE_CHECKING:
    from ..pipeline.job import Runner, RunOptions


@dataclass(frozen=True)
class RunPlan:
    """What to read (``inputs``) and where to write: ``output`` is a results or feature
    file (a ``Path``), with ``--runner ray`` possibly a folder of Parquet shards (a
    ``str``: a local folder or a URI), or ``None`` for stdout in ``stdout_format``. The
    run's ``options``; where it runs (``runner``: ``None`` for this machine); an HTML
    ``report``; and what the terminal shows (``quiet``, ``verbose``)."""

    inputs: tuple[str, ...]
    output: Path | str | None
    options: RunOptions
    runner: Runner | None = None
    report: Path | None = None
    stdout_format: str = "table"
    quiet: bool = False
    verbose: bool = False

    @property
    def embeds(self) -> bool:
        return FEATURES in self.options.outputs

    @property
    def doing(self) -> str:
        """What the progress bar says the run is doing."""
        return "embedding" if self.embeds else "classifying"

    @property
    def done(self) -> str:
        """What the summary says of the images done."""
        return "embedded" if self.embeds else "classified"


def run_plan(flags: dict[str, Any], outputs: tuple[str, ...],
             shard_formats: tuple[str, ...] = ()) -> RunPlan:
    """The plan for a command's parsed ``flags`` (click's parameter values by name: the
    ``options.run_options`` and the command's own), asking the network for ``outputs``;
    a folder of shards takes ``--format`` only among ``shard_formats``. A combination of
    flags that cannot run is a usage error. (The run's modules are imported here, not
    when ``--help`` is asked for.)"""
    from ..pipeline.job import RunOptions

    runner = _runner_name(flags["runner"], flags["old_runner"])
    fmt = flags["fmt"]
    output = _output(flags["output"], runner, fmt, shard_formats)
    report = flags.get("report")
    options = options_from(
        flags, top_k=flags.get("top_k", RunOptions.top_k), outputs=outputs,
        recursive=flags["recursive"], fmt=None if fmt == "table" else fmt,
        resume=flags["resume"], overwrite=flags["overwrite"], pixels=report is not None,
        head=flags.get("head"))
    if options.head is not None and isinstance(output, str):
        raise click.UsageError(f"--output {output} is a folder of Parquet shards; with "
                               "--head, name a results file (.csv, .jsonl, .json).")
    check_precision_backend(options.precision, options.backend)
    return RunPlan(tuple(flags["inputs"]), output, options,
                   _ray_runner(flags) if runner == "ray" else None, report,
                   stdout_format=fmt or "table", quiet=flags["quiet"],
                   verbose=flags["verbose"])


def options_from(flags: dict[str, Any], **fields) -> RunOptions:
    """The ``RunOptions`` of the flags every command that embeds or classifies shares
    (weights, backend, precision, batch size, decoding, preprocessing, hidden files,
    globs), with the command's own ``fields``."""
    from ..inputs.decoding import DecodeLimits
    from ..inputs.images import Preprocessing
    from ..pipeline.job import RunOptions

    return RunOptions(
        weights=flags["weights"], backend=flags["backend"], precision=flags["precision"],
        batch_size=flags["batch_size"], workers=flags["workers"],
        preprocessing=Preprocessing(flags["resize"], flags["interpolation"],
                                    flags["max_pixels"]),
        decode_limits=DecodeLimits(flags["decode_memory"], flags["decode_timeout"]),
        globs=tuple(flags["globs"]), include_hidden=flags["include_hidden"], **fields)


def runner_from(flags: dict[str, Any]) -> Runner | None:
    """The runner ``--runner`` (or ``--engine``) names: ``None`` for this machine."""
    return _ray_runner(flags) if _runner_name(flags["runner"], flags["old_runner"]) == "ray" \
        else None


def _runner_name(runner: str | None, old_runner: str | None) -> str:
    """``--runner``, or its first spelling (``--engine``), or ``local``."""
    if runner is not None and old_runner is not None and runner != old_runner:
        raise click.UsageError(f"--runner {runner} and --engine {old_runner} disagree; "
                               "--engine is the old name of --runner: give one.")
    return runner or old_runner or "local"


def _ray_runner(flags: dict[str, Any]) -> Runner:
    from ..cluster.runner import RayRunner

    return RayRunner(flags["ray_address"], flags["actors"], flags["ray_node_ip"],
                     verbose=flags["verbose"])


def shard_folder(output: str) -> bool:
    """Whether ``--output`` names a folder of shards rather than a file: a URI, a path
    ending in a slash, or an existing folder."""
    return is_uri(output) or output.endswith(("/", os.sep)) or os.path.isdir(output)


def _output(output: str | None, runner: str, fmt: str | None,
            shard_formats: tuple[str, ...]) -> Path | str | None:
    """``--output`` as a file (a ``Path``), or for ``--runner ray`` a folder of shards
    (the ``str`` given); a folder for the local runner, or a ``--format`` other than one
    of ``shard_formats`` for a folder, is a usage error."""
    if output is None or not shard_folder(output):
        return None if output is None else Path(output)
    if runner != "ray":
        what = "is a URI" if is_uri(output) else "is a directory"
        raise click.UsageError(f"--output {output} {what}: only --runner ray writes folders "
                               "(of Parquet shards); name a file here.")
    if fmt is not None and fmt not in shard_formats:
        raise click.UsageError(f"--output {output} is a folder of Parquet shards; "
                               f"--format {fmt} does not apply to it.")
    return output
