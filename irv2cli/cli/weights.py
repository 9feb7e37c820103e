"""``irv2 download-weights``: fetch and verify the official ImageNet weights."""

from __future__ import annotations

from pathlib import Path

import click

from ..spec import SPEC
from .options import examples


@click.command("download-weights", epilog=examples(
    "irv2 download-weights",
    "irv2 download-weights --no-top --mirror https://mirror.example.org/keras-applications/"))
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
    from .render import download_progress, status_printer, stderr_console

    weight_file = SPEC.weights(include_top)
    console = stderr_console()
    notify = status_printer(console)

    if from_file is not None:
        path = install_from_file(from_file, weight_file, force=force, notify=notify)
    else:
        with download_progress(console, weight_file.filename) as progress:
            path = ensure_weights(include_top, mirror, progress, force=force, notify=notify)
    click.echo(str(path))
