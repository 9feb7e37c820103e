"""What several test modules share: ``irv2 predict`` in-process and as a process, folders
of sample copies, small disks that fill up."""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner, Result
from PIL import Image

from irv2cli.cli.main import cli
from irv2cli.engines.builds import BUILD_CHILD
from irv2cli.inputs.images import register_heif

HOSTILE_DIR = Path(__file__).resolve().parent / "hostile"  # the misbehaving test decoder
sys.path.insert(0, str(HOSTILE_DIR))
import hostile_images  # noqa: E402


def predict(*args) -> Result:
    """``irv2 predict ARGS`` through click's test runner; unexpected exceptions propagate."""
    return CliRunner().invoke(cli, ["predict", *map(str, args)], catch_exceptions=False)


class Irv2Process:
    """``python -m irv2cli ARGS``, its stderr collected line by line as it comes."""

    def __init__(self, *args):
        self.process = subprocess.Popen([sys.executable, "-m", "irv2cli", *map(str, args)],
                                        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                        text=True)
        self.lines: list[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        for line in self.process.stderr:
            self.lines.append(line)

    @property
    def stderr(self) -> str:
        return "".join(self.lines)

    def wait_until(self, condition: Callable[[], bool], timeout: float = 240) -> None:
        """Return once ``condition()`` holds, the process still running."""
        deadline = time.monotonic() + timeout
        while not condition():
            assert self.process.poll() is None, f"it ended first:\n{self.stderr}"
            assert time.monotonic() < deadline, f"timed out; it said:\n{self.stderr}"
            time.sleep(0.05)

    def wait(self, timeout: float = 600) -> int:
        """Wait for the process to end by itself; its exit status."""
        self.process.wait(timeout=timeout)
        self._reader.join(timeout=5)
        return self.process.returncode

    def stop(self, signum: int) -> float:
        """Send ``signum``; return the seconds it took the process to exit (it is killed,
        and the test fails with what it said, if it takes more than a minute)."""
        sent = time.monotonic()
        self.process.send_signal(signum)
        try:
            self.process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
            pytest.fail(f"still running a minute after {signum!r}; it said:\n{self.stderr}")
        self._reader.join(timeout=5)
        return time.monotonic() - sent


def children_of(pid: int) -> set[int]:
    """The live child processes of ``pid`` (Linux), read thread by thread from /proc."""
    children = set()
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            children.update(int(c) for c in (task / "children").read_text().split())
        except OSError:  # ENOENT or ESRCH
            continue  # that thread ended meanwhile
    return children


def decoding_workers_of(pid: int) -> list[int]:
    """The live decoding worker processes (spawned Python) among ``pid``'s children."""
    workers = []
    for child in children_of(pid):
        try:
            if b"spawn_main" in Path(f"/proc/{child}/cmdline").read_bytes():
                workers.append(child)
        except OSError:
            continue  # it ended meanwhile
    return workers


def build_children(weights: Path) -> list[int]:
    """Pids of live processes building the fast runtime for ``weights``."""
    found = []
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            args = cmdline.read_bytes().split(b"\0")
        except OSError:
            continue  # it ended meanwhile
        if BUILD_CHILD.encode() in args and str(weights).encode() in args:
            found.append(int(cmdline.parent.name))
    return found


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


def truncate(path: Path) -> None:
    """Damage a file: cut it to half its size."""
    os.truncate(path, path.stat().st_size // 2)


def replace_with_folder(path: Path) -> None:
    """Damage a file: a folder in its place."""
    path.unlink()
    path.mkdir()
    (path / "inside.txt").write_text("not an artifact")


def hostile_pythonpath() -> str:
    """A PYTHONPATH on which the processes started meanwhile (decoding workers included)
    load the misbehaving Pillow plugin (through its ``sitecustomize``)."""
    return os.pathsep.join([str(HOSTILE_DIR), *filter(None, [os.environ.get("PYTHONPATH")])])


def hostile_folder(root: Path, samples: Path) -> Path:
    """Good photos around one file of every misbehaviour, plus hostile files of real formats."""
    root.mkdir()
    shutil.copy(samples / "chelsea.jpg", root / "a_good.jpg")
    for behaviour in hostile_images.BEHAVIOURS:
        hostile_images.write(root / f"b_{behaviour}.img", behaviour)
    Image.new("L", (1, 2_000_000), 128).save(root / "c_needle.png")  # 1:2,000,000
    lying_png(root / "d_lies_about_size.png", 4000, 4000)
    lying_png(root / "e_over_limit.png", 100_000, 100_000)
    (root / "f_truncated.jpg").write_bytes((samples / "rocket.jpg").read_bytes()[:3000])
    (root / "g_empty.jpg").write_bytes(b"")
    shutil.copy(samples / "coffee.jpg", root / "h_good.jpg")
    register_heif()
    Image.open(samples / "rocket.jpg").save(root / "i_iphone.heic")  # HEIC via pillow-heif
    return root


def lying_png(path: Path, width: int, height: int) -> Path:
    """A PNG whose header claims ``width`` x ``height`` but that holds a 4x4 image."""
    small = path.with_suffix(".tmp.png")
    Image.new("RGB", (4, 4), (10, 20, 30)).save(small)
    data = bytearray(small.read_bytes())
    small.unlink()
    data[16:24] = width.to_bytes(4, "big") + height.to_bytes(4, "big")
    import zlib

    data[29:33] = zlib.crc32(bytes(data[12:29])).to_bytes(4, "big")  # a valid IHDR checksum
    path.write_bytes(bytes(data))
    return path
