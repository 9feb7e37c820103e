"""``irv2 predict``: top-k ImageNet classes for image files and folders."""

from __future__ import annotations

import os
from pathlib import Path

import click

from ..spec import RESULT_FORMATS, SPEC
from .on_ray import output_target
from .options import run_options

FORMATS = ("table", *RESULT_FORMATS)


@click.command()
@click.argument("inputs", nargs=-1, required=True, type=click.Path(path_type=str))
@click.option("-k", "--top-k", type=click.IntRange(1, SPEC.num_classes), default=5,
              show_default=True, help="How many classes to report per image.")
@click.option("--format", "fmt", type=click.Choice(FORMATS),
              help="Output format. Default: table on stdout, or from --output's extension.")
@click.option("-o", "--output",
              help="Write results to this .csv/.jsonl/.json file as the run goes (with "
                   "--engine ray, or to a folder of Parquet shards: DIR/ or a URI).")
@click.option("--report", type=click.Path(dir_okay=False, path_type=Path),
              help="Also write an HTML report (thumbnails, top-k, failures, summary) to "
                   "this file.")
@run_options
def predict(inputs, top_k, fmt, output, report, resume, overwrite, **flags):
    """Classify image files and folders.

    Prints a top-k table per image, or writes JSON/JSONL/CSV records. Folders are walked
    in sorted order; a file that cannot be classified gets an error record and the run
    goes on. Exit status: 0 all classified, 1 some input failed, 2 usage error.
    """
    output = output_target(output, flags["engine"], fmt)
    if output is None and resume:
        raise click.UsageError("--resume needs --output.")
    if report is not None and flags["engine"] == "ray":
        raise click.UsageError("--report needs --engine local: its thumbnails come from "
                               "this machine's decoders. Make one afterwards with "
                               "`irv2 report RESULTS`.")
    if output is None and report is None and overwrite:
        raise click.UsageError("--overwrite needs --output or --report.")
    if output is not None and fmt == "table":
        raise click.UsageError("--output writes csv, jsonl or json; the table is for stdout.")
    if isinstance(output, Path) and report is not None and same_file(output, report):
        raise click.UsageError("--report and --output name the same file; give each its own.")
    from .launch import launch

    status = launch(inputs, output, lambda: _stdout_sink(fmt or "table"),
                    doing="classifying", done="classified", top_k=top_k,
                    fmt=None if fmt == "table" else fmt, resume=resume, overwrite=overwrite,
                    report=report, **flags)
    click.get_current_context().exit(status)


def same_file(first: Path, second: Path) -> bool:
    """Whether two paths name one file (links followed), whether or not it exists yet."""
    return os.path.realpath(first) == os.path.realpath(second)


def _stdout_sink(fmt: str):
    """Tables (rich, in a terminal above the live bar) or records streamed to stdout."""
    from ..results.writers import WRITERS, Output, StdoutStream
    from .render import TableWriter

    if fmt == "table":
        return Output(TableWriter())
    return Output(WRITERS[fmt](StdoutStream()))
