"""Generated picture sets for the tests of ``irv2 train``: classes that differ visibly."""

from __future__ import annotations

from pathlib import Path

import numpy as np

SIZE = 64
# Each class: a colour and a shape, so they differ in colour, shape and texture.
LOOKS = {"red disc": ((220, 40, 30), "disc"), "green bars": ((40, 190, 60), "bars"),
         "blue square": ((40, 60, 210), "square")}


def picture(look: tuple[tuple[int, int, int], str], seed: int) -> np.ndarray:
    """One 64x64 RGB picture of ``look`` on a light background, with noise."""
    colour, shape = look
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[:SIZE, :SIZE]
    if shape == "disc":
        mask = (x - 32) ** 2 + (y - 32) ** 2 < (14 + seed % 6) ** 2
    elif shape == "bars":
        mask = (x // (4 + seed % 3)) % 2 == 0
    else:
        mask = (abs(x - 32) < 16 + seed % 5) & (abs(y - 32) < 16 + seed % 5)
    image = np.full((SIZE, SIZE, 3), 235.0) + rng.normal(0, 12, (SIZE, SIZE, 3))
    image[mask] = np.array(colour) + rng.normal(0, 12, (int(mask.sum()), 3))
    return image.clip(0, 255).astype(np.uint8)


def write_pictures(folder: Path, look_name: str, count: int, first: int = 0) -> list[Path]:
    """``count`` pictures of ``LOOKS[look_name]`` as PNGs in ``folder`` (made)."""
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for seed in range(first, first + count):
        path = folder / f"{seed:03d}.png"
        Image.fromarray(picture(LOOKS[look_name], seed)).save(path)
        paths.append(path)
    return paths


def class_folders(root: Path, count: int = 6, classes=tuple(LOOKS)) -> Path:
    """``root`` holding one folder per class of ``count`` pictures."""
    for name in classes:
        write_pictures(root / name, name, count)
    return root


def split_folders(root: Path, train: int = 4, val: int = 2) -> Path:
    """``root`` holding train/ and val/, each with a folder per class."""
    for name in LOOKS:
        write_pictures(root / "train" / name, name, train)
        write_pictures(root / "val" / name, name, val, first=100)
    return root


def random_head(path: Path, weights: Path | None, classes: tuple[str, ...]) -> Path:
    """A head of ``classes`` on the features of ``weights`` (seeded random weights: for
    tests whose subject is where a head goes, not what it learnt)."""
    from irv2cli.results.heads import Head, head_metadata, save_head
    from irv2cli.store.artifacts import network_key

    rng = np.random.default_rng(0)
    save_head(Head(rng.normal(0, 0.05, (len(classes), 1536)).astype(np.float32),
                   np.zeros(len(classes), np.float32), tuple(classes),
                   head_metadata(tuple(classes), network_key(weights), precision="fp32",
                                 preprocessing={}, training={})), path)
    return path
