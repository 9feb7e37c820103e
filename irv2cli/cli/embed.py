"""``irv2 embed``: one 1536-d feature vector per image, for search, clustering and more."""

from __future__ import annotations

import click

from ..spec import FEATURE_FORMATS, FEATURES
from .options import examples, run_options
from .plan import run_plan


@click.command(epilog=examples(
    "irv2 embed photos/ -o features.parquet",
    "irv2 embed photos/ -o features.npy --resume"))
@click.argument("inputs", nargs=-1, required=True, type=click.Path(path_type=str))
@click.option("-o", "--output", required=True,
              help="Write features to this .parquet, .npy or .jsonl file as the run goes "
                   "(with --runner ray, or to a folder of Parquet shards: DIR/ or a URI).")
@click.option("--format", "fmt", type=click.Choice(FEATURE_FORMATS),
              help="Output format. Default: from --output's extension.")
@run_options
def embed(**flags):
    """Write the network's 1536-d features of image files and folders.

    The features are the average-pooled output of the last convolution (Keras's
    include_top=False, pooling="avg"), the same for the official weights with or without
    the top. Inputs, folders, preprocessing, error records and --resume work as in
    predict. Exit status: 0 all embedded, 1 some input failed, 2 usage error.
    """
    plan = run_plan(flags, (FEATURES,), shard_formats=("parquet",))
    from .launch import launch

    click.get_current_context().exit(launch(plan))
