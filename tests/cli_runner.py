"""Drive ``irv2 predict`` in-process, as the tests do."""

from __future__ import annotations

from click.testing import CliRunner, Result

from irv2cli.cli import cli


def predict(*args) -> Result:
    """``irv2 predict ARGS`` through click's test runner; unexpected exceptions propagate."""
    return CliRunner().invoke(cli, ["predict", *map(str, args)], catch_exceptions=False)
