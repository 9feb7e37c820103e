"""``--engine ray``: a run over inputs on a Ray cluster (see ``cluster``), streamed into a
results file or stdout as locally, or written by the cluster as a folder of shards."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import click

from ..inputs.uris import is_uri


def shard_folder(output: str) -> bool:
    """Whether ``--output`` names a folder of shards rather than a file: a URI, a path
    ending in a slash, or an existing folder."""
    return is_uri(output) or output.endswith(("/", os.sep)) or os.path.isdir(output)


def output_target(output: str | None, engine: str, fmt: str | None,
                  formats: tuple[str, ...] = ()) -> Path | str | None:
    """``--output`` as a results file (a ``Path``), or, for ``--engine ray``, a folder of
    Parquet shards (the ``str`` given); a folder for the local engine, or a ``--format``
    other than one of ``formats`` for a folder, is a usage error."""
    if output is None or not shard_folder(output):
        return None if output is None else Path(output)
    if engine != "ray":
        what = "is a URI" if is_uri(output) else "is a directory"
        raise click.UsageError(f"--output {output} {what}: only --engine ray writes folders "
                               "(of Parquet shards); name a file here.")
    if fmt is not None and fmt not in formats:
        raise click.UsageError(f"--output {output} is a folder of Parquet shards; "
                               f"--format {fmt} does not apply to it.")
    return output


def launch_on_ray(inputs: tuple[str, ...], output: Path | str | None,
                  stdout_sink: Callable | None, *, doing: str, done: str, quiet: bool,
                  verbose: bool, ray_address: str | None, actors: int | None,
                  ray_node_ip: str | None, **fields) -> int:
    """Run ``inputs`` on the cluster into ``output`` (a file, a folder of shards, or
    ``None``: ``stdout_sink()``); return the exit status. Ray Data draws the progress."""
    from ..cluster.engine import RayEngine
    from ..results.shards import ShardFolder
    from .render import stderr_console
    from .runs import EXIT_FAILED_INPUTS, EXIT_OK, execute, options_from_flags, summarize
    from .signals import exit_status

    cluster = RayEngine(ray_address, actors, ray_node_ip)
    options = options_from_flags(**fields)
    console = stderr_console()
    if not isinstance(output, str):
        sink = output if output is not None else stdout_sink()
        return execute(inputs, sink, options, engine=cluster, console=console, doing=doing,
                       done=done, quiet=quiet, verbose=verbose, bar=False)
    try:
        summary = cluster.write_shards(list(inputs), ShardFolder(output), options)
    except KeyboardInterrupt as interrupt:
        console.print(f"Interrupted: the shards already in {output} are complete. Run the "
                      "same command with --resume to finish.", style="yellow")
        return exit_status(interrupt)
    summarize(console, summary, done, quiet)
    return EXIT_FAILED_INPUTS if summary.any_failed else EXIT_OK
