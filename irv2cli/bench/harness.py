"""``irv2 bench``: cold start, folder throughput and peak RSS, against plain Keras.

Each measured run is its own process, started the way a user starts it, so start-up
(imports, model build or artifact load, first call) counts in the time to first result,
and ``os.wait4`` reports that process's peak RSS. Throughput is marginal: the same
command on a small and a large folder, (large - small) images / (large - small) seconds,
so start-up cancels out. Weights are generated (see ``synthetic``) so this runs offline;
predictions made with them are meaningless but must be identical across pipelines.
Everything, runtime artifacts included, lives in a temporary folder.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from ..errors import Irv2Error
from ..spec import SPEC

SAMPLE_SOURCES = ("chelsea.jpg", "coffee.jpg", "rocket.jpg", "astronaut.jpg")
PHONE_PHOTO_SIZE = (4032, 3024)  # 12 megapixels, as most phones take them
# Folder pipelines with irv2's default preprocessing (centre crop, bicubic), where big
# JPEGs are decoded at a reduced scale: small images against phone photos.
DEFAULT_PREPROCESSING = {"irv2 onnx, small images": "small", "irv2 onnx, 12 MP photos": "photos"}


@dataclass(frozen=True)
class Measurement:
    """One pipeline at one batch size, in one round."""

    pipeline: str
    batch_size: int
    images_per_second: float
    first_result_s: float
    peak_rss_mb: float
    top5: dict[str, list[int]]


@dataclass(frozen=True)
class Summary:
    """One pipeline at one batch size over every round: medians, and the highest RSS."""

    pipeline: str
    batch_size: int
    images_per_second: float
    rounds: list[float]
    first_result_s: float
    peak_rss_mb: float
    top5: dict[str, list[int]]

    @classmethod
    def of(cls, rounds: list[Measurement]) -> Summary:
        first = rounds[0]
        return cls(first.pipeline, first.batch_size,
                   statistics.median(m.images_per_second for m in rounds),
                   [m.images_per_second for m in rounds],
                   statistics.median(m.first_result_s for m in rounds),
                   max(m.peak_rss_mb for m in rounds), first.top5)


def make_folder(folder: Path, count: int, sources: list[Path]) -> Path:
    """``count`` JPEG files cycled from ``sources``."""
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(count):
        shutil.copy(sources[i % len(sources)], folder / f"img{i:05d}.jpg")
    return folder


def make_phone_photos(folder: Path, sources: list[Path]) -> list[Path]:
    """Each of ``sources`` enlarged to a 12-megapixel JPEG (quality 90), as a phone saves."""
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    photos = []
    for source in sources:
        with Image.open(source) as image:
            photo = image.convert("RGB").resize(PHONE_PHOTO_SIZE, Image.Resampling.BICUBIC)
        photos.append(folder / source.name)
        photo.save(photos[-1], quality=90)
    return photos


@dataclass(frozen=True)
class ColdStart:
    """Median wall time of a one-image command, from process start to exit."""

    pipeline: str
    median_s: float
    runs: list[float]
    peak_rss_mb: float


def _timed_run(command: list[str], output: Path | None, env: dict[str, str]
               ) -> tuple[float, float, float]:
    """(wall seconds, seconds until the first record appeared, peak RSS in MB)."""
    with tempfile.TemporaryFile() as log:
        started = time.perf_counter()
        process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=log, env=env)
        first = None
        while True:
            pid, status, usage = os.wait4(process.pid, os.WNOHANG)
            if (first is None and output is not None and output.exists()
                    and output.stat().st_size > 0):
                first = time.perf_counter() - started
            if pid:
                break
            time.sleep(0.02)
        wall = time.perf_counter() - started
        if os.waitstatus_to_exitcode(status) not in (0, 1):
            log.seek(0)
            tail = log.read().decode(errors="replace").strip().splitlines()[-5:]
            raise Irv2Error(f"benchmark run failed: {' '.join(command)}\n" + "\n".join(tail))
    return wall, first if first is not None else wall, usage.ru_maxrss / 1024


def _command(pipeline: str, folder: Path, weights: Path, batch_size: int,
             output: Path) -> list[str]:
    if pipeline.startswith("irv2"):
        keras_exact = ([] if pipeline in DEFAULT_PREPROCESSING
                       else ["--resize", "squash", "--interpolation", "nearest"])
        return [sys.executable, "-m", "irv2cli", "predict", str(folder), "--weights",
                str(weights), "--output", str(output), "--overwrite", "--quiet",
                "--batch-size", str(batch_size), *keras_exact,
                "--backend", pipeline.split()[1].rstrip(",")]
    return [sys.executable, "-m", "irv2cli.bench.harness", "keras-loop", str(folder), str(weights),
            str(batch_size), str(output)]


def _top5(output: Path) -> dict[str, list[int]]:
    records = [json.loads(line) for line in output.read_text().splitlines()]
    return {Path(r["path"]).name: [p["index"] for p in r["predictions"]] for r in records}


def measure(pipeline: str, batch_size: int, small: Path, large: Path, weights: Path,
            scratch: Path, env: dict[str, str]) -> Measurement:
    """Run ``pipeline`` on both folders and derive marginal throughput."""
    out_small, out_large = scratch / "small.jsonl", scratch / "large.jsonl"
    for out in (out_small, out_large):
        out.unlink(missing_ok=True)
    t_small, _, _ = _timed_run(_command(pipeline, small, weights, batch_size, out_small),
                               out_small, env)
    t_large, first, rss = _timed_run(_command(pipeline, large, weights, batch_size, out_large),
                                     out_large, env)
    extra = len(list(large.iterdir())) - len(list(small.iterdir()))
    return Measurement(pipeline, batch_size, extra / (t_large - t_small), first, rss,
                       _top5(out_large))


def keras_loop(folder: Path, weights: Path, batch_size: int, output: Path) -> None:
    """The plain Keras recipe: load_img + preprocess_input + model.predict, in batches."""
    import keras
    import numpy as np

    from ..results.labels import decode_top_k

    model = keras.applications.InceptionResNetV2(weights=str(weights))
    paths = sorted(folder.iterdir())
    with open(output, "w") as out:
        for start in range(0, len(paths), batch_size):
            chunk = paths[start:start + batch_size]
            images = np.stack([keras.utils.img_to_array(
                keras.utils.load_img(p, target_size=(299, 299))) for p in chunk])
            inputs = keras.applications.inception_resnet_v2.preprocess_input(images)
            for path, probabilities in zip(chunk, model.predict(inputs, verbose=0),
                                           strict=True):
                predictions = [{"index": p.index} for p in decode_top_k(probabilities, 5)]
                out.write(json.dumps({"path": str(path), "predictions": predictions}) + "\n")
            out.flush()


def keras_recipe(weights: Path, image: Path) -> None:
    """The reference recipe for one image: build keras.applications' model, load the .h5,
    load_img + preprocess_input + predict + decode. (``decode_predictions`` would download
    the class index, so the shipped copy decodes.)"""
    import keras

    from ..results.labels import decode_top_k

    model = keras.applications.InceptionResNetV2(weights=str(weights))
    x = keras.utils.img_to_array(keras.utils.load_img(image, target_size=(299, 299)))
    x = keras.applications.inception_resnet_v2.preprocess_input(x[None])
    for p in decode_top_k(model.predict(x, verbose=0)[0], 5):
        print(p.rank, p.label, f"{p.score:.4f}")


def cold_starts(weights: Path, image: Path, env: dict[str, str], runs: int) -> list[ColdStart]:
    """``irv2 predict IMAGE`` (official weights installed, runtime artifact built) against
    the plain Keras recipe, each ``runs`` times from process start."""
    installed = Path(env["IRV2_HOME"]) / "weights" / SPEC.top_weights.filename
    installed.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy(weights, installed)
    commands = {
        "irv2 predict (onnx)": [sys.executable, "-m", "irv2cli", "predict", str(image)],
        "Keras recipe": [sys.executable, "-m", "irv2cli.bench.harness", "keras-recipe",
                         str(weights), str(image)],
    }
    subprocess.run(commands["irv2 predict (onnx)"], env=env, check=True,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # builds the artifact
    # Interleaved, so a slow spell of a shared machine hits both commands alike.
    timings = {name: [] for name in commands}
    for _ in range(runs):
        for name, command in commands.items():
            timings[name].append(_timed_run(command, None, env))
    return [ColdStart(name, statistics.median(t[0] for t in runs_),
                      [t[0] for t in runs_], max(t[2] for t in runs_))
            for name, runs_ in timings.items()]


def run_benchmark(samples: Path, weights: Path | None, small: int, large: int,
                  batch_sizes: list[int], keras_batch_sizes: list[int], cold_runs: int,
                  rounds: int, progress=print) -> tuple[list[ColdStart], list[Summary]]:
    """Every measurement, in the order of the tables. This process never imports
    TensorFlow, so its own memory does not leak into the children's peak RSS."""
    with tempfile.TemporaryDirectory(prefix="irv2-bench-") as tmp:
        scratch = Path(tmp)
        env = {**os.environ, "IRV2_HOME": str(scratch / "home"), "TF_CPP_MIN_LOG_LEVEL": "3"}
        if weights is None:
            progress("generating random weights...")
            weights = scratch / "weights.h5"
            subprocess.run([sys.executable, "-m", "irv2cli.bench.harness", "random-weights",
                            str(weights)], env=env, check=True, stderr=subprocess.DEVNULL)
        sources = [samples / name for name in SAMPLE_SOURCES if (samples / name).exists()]
        progress("measuring cold starts...")
        starts = cold_starts(weights, sources[0], env, cold_runs)
        progress("building the runtime artifact for these weights...")
        subprocess.run([sys.executable, "-m", "irv2cli", "predict", str(sources[0]),
                        "--weights", str(weights), "--quiet"], env=env, check=True,
                       stdout=subprocess.DEVNULL)
        photos = make_phone_photos(scratch / "photo-sources", sources)
        folders = {kind: (make_folder(scratch / f"{kind}-small", small, files),
                          make_folder(scratch / f"{kind}-large", large, files))
                   for kind, files in (("small", sources), ("photos", photos))}
        batch = max(batch_sizes)
        plan = ([("irv2 onnx", b) for b in batch_sizes] + [("irv2 keras", batch)]
                + [("keras", b) for b in keras_batch_sizes]
                + [(pipeline, batch) for pipeline in DEFAULT_PREPROCESSING])
        measured: dict[tuple[str, int], list[Measurement]] = {step: [] for step in plan}
        for round_ in range(1, rounds + 1):
            for pipeline, batch_size in plan:
                progress(f"round {round_}/{rounds}: {pipeline} at batch {batch_size}...")
                small_folder, large_folder = folders[DEFAULT_PREPROCESSING.get(pipeline,
                                                                               "small")]
                measured[pipeline, batch_size].append(measure(
                    pipeline, batch_size, small_folder, large_folder, weights, scratch, env))
        return starts, [Summary.of(rounds_) for rounds_ in measured.values()]


def _main() -> None:
    parser = argparse.ArgumentParser(description="Benchmark helpers: the plain Keras pipelines.")
    roles = parser.add_subparsers(dest="role", required=True)
    loop = roles.add_parser("keras-loop")
    loop.add_argument("folder", type=Path)
    loop.add_argument("weights", type=Path)
    loop.add_argument("batch_size", type=int)
    loop.add_argument("output", type=Path)
    recipe = roles.add_parser("keras-recipe")
    recipe.add_argument("weights", type=Path)
    recipe.add_argument("image", type=Path)
    roles.add_parser("random-weights").add_argument("path", type=Path)
    args = parser.parse_args()
    if args.role == "keras-loop":
        keras_loop(args.folder, args.weights, args.batch_size, args.output)
    elif args.role == "keras-recipe":
        keras_recipe(args.weights, args.image)
    else:
        from ..network.synthetic import write_random_weights

        write_random_weights(args.path)


if __name__ == "__main__":
    _main()
