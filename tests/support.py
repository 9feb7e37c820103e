"""What several test modules share: ``irv2 predict`` in-process, folders of sample copies."""

from __future__ import annotations

import shutil
from collections.abc import Iterable
from pathlib import Path

from click.testing import CliRunner, Result

from irv2cli.cli.main import cli


def predict(*args) -> Result:
    """``irv2 predict ARGS`` through click's test runner; unexpected exceptions propagate."""
    return CliRunner().invoke(cli, ["predict", *map(str, args)], catch_exceptions=False)


def copies(sample: Path, folder: Path, names: Iterable[str]) -> Path:
    """``folder``, made, holding a copy of ``sample`` under each of ``names``."""
    folder.mkdir()
    for name in names:
        shutil.copy(sample, folder / name)
    return folder


def numbered(count: int) -> list[str]:
    """``img00.jpg``, ``img01.jpg``, ...: ``count`` file names in sorted order."""
    return [f"img{i:02d}.jpg" for i in range(count)]
