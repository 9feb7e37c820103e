"""``irv2 predict``: top-k ImageNet classes for image files and folders."""

from __future__ import annotations

import os
from pathlib import Path

import click

from ..spec import PROBABILITIES, RESULT_FORMATS, SPEC
from .options import examples, run_options
from .plan import run_plan

FORMATS = ("table", *RESULT_FORMATS)


@click.command(epilog=examples(
    "irv2 predict cat.jpg",
    "irv2 predict photos/ -o labels.csv --resume --report report.html",
    "irv2 predict photos/ --head products.head -o products.csv"))
@click.argument("inputs", nargs=-1, required=True, type=click.Path(path_type=str))
@click.option("-k", "--top-k", type=click.IntRange(1, SPEC.num_classes), default=5,
              show_default=True, help="How many classes to report per image (with --head, "
                                      "at most its class count).")
@click.option("--head", type=click.Path(dir_okay=False, path_type=Path),
              help="Classify into your own classes: a head file that `irv2 train` wrote "
                   "(records carry its class names).")
@click.option("--format", "fmt", type=click.Choice(FORMATS),
              help="Output format. Default: table on stdout, or from --output's extension.")
@click.option("-o", "--output",
              help="Write results to this .csv/.jsonl/.json file as the run goes (with "
                   "--runner ray, or to a folder of Parquet shards: DIR/ or a URI).")
@click.option("--report", type=click.Path(dir_okay=False, path_type=Path),
              help="Also write an HTML report (thumbnails, top-k, failures, summary) to "
                   "this file.")
@run_options
def predict(**flags):
    """Classify image files and folders.

    Prints a top-k table per image, or writes JSON/JSONL/CSV records. Folders are walked
    in sorted order; a file that cannot be classified gets an error record and the run
    goes on. Exit status: 0 all classified, 1 some input failed, 2 usage error.
    """
    plan = run_plan(flags, (PROBABILITIES,))
    if plan.output is None and plan.options.resume:
        raise click.UsageError("--resume needs --output.")
    if plan.report is not None and plan.runner is not None:
        raise click.UsageError("--report needs --runner local: its thumbnails come from "
                               "this machine's decoders. Make one afterwards with "
                               "`irv2 report RESULTS`.")
    if plan.output is None and plan.report is None and plan.options.overwrite:
        raise click.UsageError("--overwrite needs --output or --report.")
    if plan.output is not None and flags["fmt"] == "table":
        raise click.UsageError("--output writes csv, jsonl or json; the table is for stdout.")
    if (isinstance(plan.output, Path) and plan.report is not None
            and same_file(plan.output, plan.report)):
        raise click.UsageError("--report and --output name the same file; give each its own.")
    from .launch import launch

    click.get_current_context().exit(launch(plan))


def same_file(first: Path, second: Path) -> bool:
    """Whether two paths name one file (links followed), whether or not it exists yet."""
    return os.path.realpath(first) == os.path.realpath(second)
