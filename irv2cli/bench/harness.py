"""``irv2 bench``'s measuring: cold start, folder throughput and peak RSS of each pipeline,
the tool's and the plain Keras baselines' (see ``baselines``).

Each measured run is its own process, started the way a user starts it, so start-up
(imports, model build or artifact load, first call) counts in the time to first result,
and ``os.wait4`` reports that process's peak RSS. Throughput is marginal: the same
command on a small and a large folder, (large - small) images / (large - small) seconds,
so start-up cancels out. Weights are generated (see ``synthetic``) so this runs offline;
predictions made with them are meaningless but must be identical across pipelines.
Everything, runtime artifacts included, lives in a temporary folder.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from importlib.resources import files
from pathlib import Path
from typing import Literal

from ..errors import Irv2Error
from ..spec import SPEC

PHOTO_SUFFIXES = (".jpg", ".jpeg")
PHONE_PHOTO_SIZE = (4032, 3024)  # 12 megapixels, as most phones take them
KERAS_PREPROCESSING = ("--resize", "squash", "--interpolation", "nearest")  # as load_img
Images = Literal["small", "photos"]


def python_call(module: str, function: str, *arguments: str | int | Path) -> list[str]:
    """The command that runs ``module.function(*arguments)`` in a fresh interpreter; the
    arguments travel as one JSON string in argv, never as code."""
    code = (f"import json, sys; from {module} import {function}; "
            f"{function}(*json.loads(sys.argv[1]))")
    values = [str(a) if isinstance(a, Path) else a for a in arguments]
    return [sys.executable, "-c", code, json.dumps(values)]


@dataclass(frozen=True)
class Pipeline:
    """One way of classifying a folder: ``irv2 predict`` on ``backend`` and ``runner`` in
    ``precision``, or the plain Keras loop (``backend`` None, the baseline); with Keras's
    preprocessing (squash, nearest: in fp32 its top-5 must equal Keras's) or irv2's
    defaults; on small images or 12 MP photos."""

    name: str
    backend: str | None
    keras_preprocessing: bool = True
    images: Images = "small"
    precision: str = "fp32"
    runner: str = "local"
    head: bool = False  # with a head of HEAD_CLASSES classes (``predict --head``)

    @property
    def is_baseline(self) -> bool:
        return self.backend is None

    @property
    def exact(self) -> bool:
        """Whether its top-5 must be Keras's (int8 approximates; a head has its own
        classes)."""
        return self.precision == "fp32" and not self.head

    def command(self, folder: Path, weights: Path, batch_size: int, output: Path,
                head: Path | None = None) -> list[str]:
        """The process that classifies ``folder`` into ``output`` (JSON lines); ``head``:
        the head file of a pipeline with one."""
        if self.is_baseline:
            return python_call("irv2cli.bench.baselines", "keras_loop", folder, weights,
                               batch_size, output)
        return [sys.executable, "-m", "irv2cli", "predict", str(folder), "--weights",
                str(weights), "--output", str(output), "--overwrite", "--quiet",
                "--batch-size", str(batch_size),
                *(KERAS_PREPROCESSING if self.keras_preprocessing else ()),
                "--backend", self.backend, "--precision", self.precision,
                *(("--head", str(head)) if self.head else ()),
                "--runner", self.runner]


IRV2_ONNX = Pipeline("irv2 onnx", "onnx")
IRV2_INT8 = Pipeline("irv2 onnx int8", "onnx", precision="int8")
IRV2_HEAD = Pipeline("irv2 onnx --head", "onnx", head=True)
HEAD_CLASSES = 10
IRV2_KERAS = Pipeline("irv2 keras", "keras")
KERAS_LOOP = Pipeline("keras", None)
# irv2's default preprocessing (centre crop, bicubic), where big JPEGs are decoded at a
# reduced scale: small images against phone photos.
DEFAULT_PREPROCESSING = (
    Pipeline("irv2 onnx, small images", "onnx", keras_preprocessing=False, images="small"),
    Pipeline("irv2 onnx, 12 MP photos", "onnx", keras_preprocessing=False, images="photos"),
)


# --runner ray on a Ray instance each run starts on this machine (its start counts).
IRV2_ON_RAY = Pipeline("irv2 onnx, --runner ray", "onnx", runner="ray")


def plan(batch_sizes: list[int], keras_batch_sizes: list[int], ray: bool = False
         ) -> list[tuple[Pipeline, int]]:
    """Every folder measurement, in the order of the table: irv2 onnx in fp32, with a head,
    then int8 at each batch size, irv2 keras and irv2's own preprocessing at the largest, the Keras
    loop at its own, and with ``ray`` irv2 onnx on Ray at the largest."""
    batch = max(batch_sizes)
    return ([(p, b) for b in batch_sizes for p in (IRV2_ONNX, IRV2_HEAD, IRV2_INT8)]
            + [(IRV2_KERAS, batch)]
            + [(KERAS_LOOP, b) for b in keras_batch_sizes]
            + [(pipeline, batch) for pipeline in DEFAULT_PREPROCESSING]
            + ([(IRV2_ON_RAY, batch)] if ray else []))


@dataclass(frozen=True)
class Measurement:
    """One pipeline at one batch size, in one round."""

    pipeline: Pipeline
    batch_size: int
    images_per_second: float
    first_result_s: float
    peak_rss_mb: float
    top5: dict[str, list[int]]


@dataclass(frozen=True)
class Summary:
    """One pipeline at one batch size over every round: medians, and the highest RSS."""

    pipeline: Pipeline
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

    command: str
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


def _top5(output: Path) -> dict[str, list[int]]:
    records = [json.loads(line) for line in output.read_text().splitlines()]
    return {Path(r["path"]).name: [p["index"] for p in r["predictions"]] for r in records}


def measure(pipeline: Pipeline, batch_size: int, small: Path, large: Path, weights: Path,
            scratch: Path, env: dict[str, str], head: Path | None = None) -> Measurement:
    """Run ``pipeline`` on both folders and derive marginal throughput."""
    out_small, out_large = scratch / "small.jsonl", scratch / "large.jsonl"
    for out in (out_small, out_large):
        out.unlink(missing_ok=True)
    t_small, _, _ = _timed_run(pipeline.command(small, weights, batch_size, out_small, head),
                               out_small, env)
    t_large, first, rss = _timed_run(
        pipeline.command(large, weights, batch_size, out_large, head), out_large, env)
    extra = len(list(large.iterdir())) - len(list(small.iterdir()))
    return Measurement(pipeline, batch_size, extra / (t_large - t_small), first, rss,
                       _top5(out_large))


def quantize_command(calibration: Path, weights: Path | None = None) -> list[str]:
    """``irv2 quantize`` on ``calibration`` for ``weights`` (default: the official file)."""
    return [sys.executable, "-m", "irv2cli", "quantize", "--calibrate", str(calibration),
            *(("--weights", str(weights)) if weights is not None else ())]


def write_head(path: Path, network: str, classes: int = HEAD_CLASSES) -> Path:
    """A head of ``classes`` classes (seeded random weights: its answers mean nothing, its
    cost is a real head's) on the features of the weights keyed ``network``."""
    import numpy as np

    from ..results.heads import Head, head_metadata, save_head

    rng = np.random.default_rng(0)
    names = tuple(f"class {i}" for i in range(classes))
    save_head(Head(rng.normal(0, 0.05, (classes, SPEC.feature_dim)).astype(np.float32),
                   np.zeros(classes, np.float32), names,
                   head_metadata(names, network, precision="fp32", preprocessing={},
                                 training={})), path)
    return path


def cold_starts(weights: Path, image: Path, calibration: Path, env: dict[str, str],
                runs: int) -> list[ColdStart]:
    """``irv2 predict IMAGE`` in fp32, with a head and in int8 (official weights
    installed, runtime artifacts built, int8 calibrated on ``calibration``) against the
    plain Keras recipe, each ``runs`` times from process start."""
    from ..store.artifacts import OFFICIAL_FEATURES

    installed = Path(env["IRV2_HOME"]) / "weights" / SPEC.top_weights.filename
    installed.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy(weights, installed)
    irv2 = [sys.executable, "-m", "irv2cli", "predict", str(image)]
    recipe = python_call("irv2cli.bench.baselines", "keras_recipe", weights, image)
    for build in (irv2, quantize_command(calibration)):  # the artifacts
        subprocess.run(build, env=env, check=True, stdout=subprocess.DEVNULL,
                       stderr=subprocess.DEVNULL)
    head = write_head(Path(env["IRV2_HOME"]) / "official.head", OFFICIAL_FEATURES)
    commands = {"irv2 predict (onnx)": irv2,
                "irv2 predict --head (onnx)": [*irv2, "--head", str(head)],
                "irv2 predict (onnx int8)": [*irv2, "--precision", "int8"],
                "Keras recipe": recipe}
    timings: dict[str, list[tuple[float, float, float]]] = {name: [] for name in commands}
    # Interleaved, so a slow spell of a shared machine hits both commands alike.
    for _ in range(runs):
        for name, command in commands.items():
            timings[name].append(_timed_run(command, None, env))
    return [ColdStart(name, statistics.median(t[0] for t in times), [t[0] for t in times],
                      max(t[2] for t in times))
            for name, times in timings.items()]


def sample_photos() -> Path:
    """The folder of sample photos installed with irv2cli (the checkout's ``samples/``)."""
    return Path(str(files("irv2cli") / "data" / "samples"))


def photo_sources(folder: Path) -> list[Path]:
    """The JPEG photos of ``folder``, sorted; ``Irv2Error`` if it holds none."""
    photos = sorted(path for path in folder.iterdir()
                    if path.suffix.lower() in PHOTO_SUFFIXES and path.is_file())
    if not photos:
        raise Irv2Error(f"{folder} holds no JPEG photos (*.jpg, *.jpeg) to measure with")
    return photos


def scratch_env(scratch: Path) -> dict[str, str]:
    """The environment of every measured process: its cache in ``scratch``."""
    return {**os.environ, "IRV2_HOME": str(scratch / "home"), "TF_CPP_MIN_LOG_LEVEL": "3"}


def generated_weights(scratch: Path, env: dict[str, str], progress) -> Path:
    """Seeded random weights in the official layout, written in ``scratch``."""
    progress("generating random weights...")
    weights = scratch / "weights.h5"
    subprocess.run(python_call("irv2cli.network.synthetic", "write_random_weights", weights),
                   env=env, check=True, stderr=subprocess.DEVNULL)
    return weights


@contextlib.contextmanager
def prepared(images: Path | None, weights: Path | None, progress
             ) -> Iterator[tuple[list[Path], Path, dict[str, str], Path, Path]]:
    """What every benchmark starts from: the JPEG photos of ``images`` (default: the
    samples), a temporary scratch folder and the environment of the processes measured
    there, ``weights`` (default: generated in the scratch) and a calibration folder of
    the photos; removed on leaving."""
    sources = photo_sources(images or sample_photos())
    with tempfile.TemporaryDirectory(prefix="irv2-bench-") as tmp:
        scratch = Path(tmp)
        env = scratch_env(scratch)
        weights = weights or generated_weights(scratch, env, progress)
        yield (sources, scratch, env, weights,
               make_folder(scratch / "calibration", len(sources), sources))


def build_runtimes(weights: Path, image: Path, calibration: Path, env: dict[str, str],
                   progress) -> None:
    """Build the fp32 and int8 runtimes of ``weights`` (int8 calibrated on
    ``calibration``) in ``env``'s cache, so no measurement pays for a build."""
    progress("building the runtime artifacts (fp32, int8) for these weights...")
    subprocess.run([sys.executable, "-m", "irv2cli", "predict", str(image), "--weights",
                    str(weights), "--quiet"], env=env, check=True, stdout=subprocess.DEVNULL)
    subprocess.run(quantize_command(calibration, weights), env=env, check=True,
                   stdout=subprocess.DEVNULL)


@dataclass(frozen=True)
class BenchSettings:
    """What ``irv2 bench`` measures: on the JPEG photos of ``images`` (default: the sample
    photos), with ``weights`` (default: generated), folders of ``small`` and ``large``
    images at each of ``batch_sizes`` (the Keras loop at ``keras_batch_sizes``), over
    ``rounds``; ``cold_runs`` one-image starts; with ``ray``, the Ray runner too."""

    images: Path | None = None
    weights: Path | None = None
    small: int = 8
    large: int = 40
    batch_sizes: tuple[int, ...] = (1, 8, 16)
    keras_batch_sizes: tuple[int, ...] = (1, 8)
    cold_runs: int = 3
    rounds: int = 2
    ray: bool = False


def run_benchmark(settings: BenchSettings, progress=print
                  ) -> tuple[list[ColdStart], list[Summary]]:
    """Every measurement, in the order of the tables. This process never imports
    TensorFlow, so its own memory does not leak into the children's peak RSS."""
    rounds = settings.rounds
    with prepared(settings.images, settings.weights, progress) as (
            sources, scratch, env, weights, calibration):
        progress("measuring cold starts...")
        starts = cold_starts(weights, sources[0], calibration, env, settings.cold_runs)
        build_runtimes(weights, sources[0], calibration, env, progress)
        photos = make_phone_photos(scratch / "photo-sources", sources)
        folders = {kind: (make_folder(scratch / f"{kind}-small", settings.small, files),
                          make_folder(scratch / f"{kind}-large", settings.large, files))
                   for kind, files in (("small", sources), ("photos", photos))}
        from ..store.artifacts import network_key

        head = write_head(scratch / "bench.head", network_key(weights))
        steps = plan(list(settings.batch_sizes), list(settings.keras_batch_sizes), settings.ray)
        measured: dict[tuple[Pipeline, int], list[Measurement]] = {step: [] for step in steps}
        for round_ in range(1, rounds + 1):
            for pipeline, batch_size in steps:
                progress(f"round {round_}/{rounds}: {pipeline.name} at batch {batch_size}...")
                small_folder, large_folder = folders[pipeline.images]
                measured[pipeline, batch_size].append(measure(
                    pipeline, batch_size, small_folder, large_folder, weights, scratch, env,
                    head))
        return starts, [Summary.of(rounds_) for rounds_ in measured.values()]
