"""The ``irv2`` command: parse, call the library, render. TensorFlow loads only when needed."""

from __future__ import annotations

import os

import click

from ..errors import Irv2Error
from ..version import __version__
from .advice import user_message
from .bench import bench
from .embed import embed
from .explain import explain
from .export import export
from .predict import predict
from .quantize import quantize
from .report import report
from .signals import exit_status, stop_on_signals
from .summary import summary
from .weights import download_weights


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


for command in (predict, embed, explain, quantize, download_weights, export, bench, summary,
                report):
    cli.add_command(command)


def main() -> None:
    """Console-script entry point."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    stop_on_signals()
    cli()
