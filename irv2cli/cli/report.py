"""``irv2 report``: the HTML report of an earlier ``irv2 predict`` run, from its results."""

from __future__ import annotations

from pathlib import Path

import click

from ..spec import RESULT_FORMATS
from .options import decode_options, examples, preprocessing_options


@click.command(epilog=examples(
    "irv2 report labels.jsonl -o report.html"))
@click.argument("results", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("-o", "--output", required=True, type=click.Path(dir_okay=False, path_type=Path),
              help="The HTML file to write.")
@click.option("--format", "fmt", type=click.Choice(RESULT_FORMATS),
              help="The results file's format. Default: from its extension.")
@click.option("--overwrite", is_flag=True, help="Replace an existing --output file.")
@decode_options("the thumbnails", "is shown without its thumbnail")
@click.option("-q", "--quiet", is_flag=True, help="No summary on stderr.")
@preprocessing_options
def report(results, output, fmt, overwrite, workers, decode_memory, decode_timeout, quiet,
           resize, interpolation, max_pixels):
    """Write an HTML report of a predict run from its results file (.jsonl, .json, .csv).

    Each image gets a thumbnail, decoded again from the file the record names (in
    isolated worker processes, within the same limits as predict's), and its top-k
    labels; failed files are listed with their errors. Paths are read as the file holds
    them, relative to the current folder. Exit status: 0 written, 1 the file could not be
    read or written.
    """
    from ..inputs.decoding import DecodeLimits, DecodePool, default_workers
    from ..inputs.images import Preprocessing
    from ..results.files import output_format
    from ..results.report import report_results
    from ..results.writers import shown
    from .render import stderr_console

    fmt = output_format(results, fmt)  # an unknown extension is refused before any work
    limits = DecodeLimits(decode_memory, decode_timeout)
    with DecodePool(workers or default_workers(), limits) as decoders:
        classified, failed = report_results(
            results, output, decoders, overwrite=overwrite, fmt=fmt,
            preprocessing=Preprocessing(resize, interpolation, max_pixels))
    if not quiet:
        stderr_console().print(f"{shown(output)}: {classified} classified, {failed} failed",
                               style="dim")
