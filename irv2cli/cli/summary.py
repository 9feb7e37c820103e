"""``irv2 summary``: the architecture as stages or layers, from plain data (no TensorFlow).

The tables are built in ``architecture_tables``, imported when the command runs, so
registering it costs the other commands nothing."""

from __future__ import annotations

import json

import click

from .options import examples


@click.command(epilog=examples(
    "irv2 summary",
    "irv2 summary --layers --format json"))
@click.option("--layers", "with_layers", is_flag=True,
              help="List every layer (name, type, output shape, parameters), in Keras's order.")
@click.option("--format", "format_", type=click.Choice(["table", "json"]), default="table",
              show_default=True, help="A rich table, or JSON for scripts.")
def summary(with_layers: bool, format_: str) -> None:
    """Show the architecture: stages, branch layouts, output shapes, parameters.

    Needs no weights and no TensorFlow: it is derived from a plain description of the
    network, which the tests prove equal to the Keras model.
    """
    from .architecture_tables import layers_table, stages_table, summary_json

    if format_ == "json":
        click.echo(json.dumps(summary_json(with_layers), indent=2))
        return
    from rich.console import Console

    Console(markup=False).print(layers_table() if with_layers else stages_table())
