"""``irv2 embed``: one 1536-d feature vector per image, for search, clustering and more."""

from __future__ import annotations

import click

from ..spec import FEATURE_FORMATS, FEATURES
from .on_ray import output_target
from .options import run_options


@click.command()
@click.argument("inputs", nargs=-1, required=True, type=click.Path(path_type=str))
@click.option("-o", "--output", required=True,
              help="Write features to this .parquet, .npy or .jsonl file as the run goes "
                   "(with --engine ray, or to a folder of Parquet shards: DIR/ or a URI).")
@click.option("--format", "fmt", type=click.Choice(FEATURE_FORMATS),
              help="Output format. Default: from --output's extension.")
@run_options
def embed(inputs, output, fmt, **flags):
    """Write the network's 1536-d features of image files and folders.

    The features are the average-pooled output of the last convolution (Keras's
    include_top=False, pooling="avg"), the same for the official weights with or without
    the top. Inputs, folders, preprocessing, error records and --resume work as in
    predict. Exit status: 0 all embedded, 1 some input failed, 2 usage error.
    """
    output = output_target(output, flags["engine"], fmt, formats=("parquet",))
    from .launch import launch

    status = launch(inputs, output, None, doing="embedding", done="embedded",
                    outputs=(FEATURES,), fmt=fmt, **flags)
    click.get_current_context().exit(status)
