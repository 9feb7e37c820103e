"""What several test modules share: ``irv2 predict`` in-process, folders of sample copies,
small disks that fill up."""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import sys
from collections.abc import Iterable, Iterator
from pathlib import Path

import pytest
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


ROOT = os.geteuid() == 0 and sys.platform.startswith("linux")
needs_root = pytest.mark.skipif(not ROOT, reason="needs root on Linux (mount, mknod)")


@contextlib.contextmanager
def tmpfs(mount: Path, size: str) -> Iterator[Path]:
    """A tmpfs of ``size`` (``64k``) mounted on ``mount`` (made), unmounted afterwards."""
    if not ROOT:
        pytest.skip("mounting a tmpfs needs root on Linux")
    mount.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(mount)],
                   check=True)
    try:
        yield mount
    finally:
        subprocess.run(["umount", str(mount)], check=True)


def fill(disk: Path, leave: int) -> Path:
    """Fill ``disk`` up, then free ``leave`` bytes; the filler file."""
    filler = disk / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT)
    try:
        while os.write(fd, b"x" * 4096):
            pass
    except OSError:
        pass
    finally:
        os.close(fd)
    os.truncate(filler, filler.stat().st_size - leave)
    return filler
