"""``irv2 bench --serve``: the HTTP server against the engine and ``irv2 predict DIR``.

For each precision, in this order, each in processes of its own on this machine: the
marginal rate of ``irv2 predict DIR`` at batch 8 (``harness.measure``); the engine's own
batch-1 inference time (median, in a process that loads just the engine); then a real
``irv2 serve`` on 127.0.0.1 (batches of up to 8), driven by ``http_client`` in another
process: one client posting one small image at a time (latency), then 8 concurrent
clients posting the photos (throughput, median and p99 latency). Last, a soak: many
requests, a few of them broken images, with the server's resident memory and open file
descriptors read from /proc before and after.
"""

from __future__ import annotations

import json
import os
import signal
import statistics
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from ..errors import Irv2Error
from .harness import (
    Pipeline,
    build_runtimes,
    make_folder,
    measure,
    prepared,
    python_call,
)
from .http_client import percentile

SMALL_IMAGE_SIZE = (320, 240)
CLIENTS = 8
WARM_UP_REQUESTS = 16
LIMIT_SECONDS = 600.0  # no phase runs longer, whatever the counts asked


@dataclass(frozen=True)
class ServeBenchSettings:
    """What ``irv2 bench --serve`` measures: with ``weights`` (default: generated), on the
    JPEG photos of ``images`` (default: the samples), ``single`` one-client requests and
    ``concurrent`` requests of 8 clients per precision, then ``soak`` requests (0:
    none)."""

    images: Path | None = None
    weights: Path | None = None
    precisions: tuple[str, ...] = ("fp32", "int8")
    single: int = 100
    concurrent: int = 400
    soak: int = 10_000


@dataclass(frozen=True)
class Load:
    """What the clients saw: 200 answers' latencies, the wall time, every status."""

    latencies: list[float]
    elapsed: float
    statuses: dict[str, int]

    @property
    def rate(self) -> float:
        return len(self.latencies) / self.elapsed

    @property
    def median(self) -> float:
        return statistics.median(self.latencies)

    @property
    def p99(self) -> float:
        return percentile(self.latencies, 0.99)


@dataclass(frozen=True)
class ServeMeasurement:
    """One precision: the engine's batch-1 time, one client's and 8 clients' load, and
    ``irv2 predict DIR``'s marginal rate at batch 8."""

    precision: str
    engine_batch1_s: float
    single: Load
    concurrent: Load
    predict_rate: float


@dataclass(frozen=True)
class Soak:
    """The server's resident memory (MB) and open descriptors before and after a load."""

    precision: str
    load: Load
    rss_before_mb: float
    rss_after_mb: float
    fds_before: int
    fds_after: int


def time_engine(weights: str, precision: str, image: str, runs: int) -> None:
    """Print the median seconds of ``runs`` batch-1 calls of the onnx engine on
    ``image`` (after three unmeasured ones)."""
    import numpy as np

    from ..engines.base import load_engine
    from ..inputs.images import load_input

    engine = load_engine(Path(weights), "onnx", precision=precision)
    batch = load_input(image)[np.newaxis]
    times = []
    for n in range(runs + 3):
        started = time.perf_counter()
        engine(batch)
        if n >= 3:
            times.append(time.perf_counter() - started)
    print(json.dumps(statistics.median(times)))


class Server:
    """``irv2 serve`` on a free loopback port, started and waited for until ready; stopped
    with SIGTERM on leaving."""

    def __init__(self, weights: Path, precision: str, env: dict[str, str], log: Path):
        self._log = log.open("wb")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "irv2cli", "serve", "--port", "0", "--weights",
             str(weights), "--precision", precision, "--max-batch", str(CLIENTS)],
            stdout=subprocess.DEVNULL, stderr=self._log, env=env)
        self.url = self._wait_ready(log)

    def _wait_ready(self, log: Path, timeout: float = 120.0) -> str:
        deadline = time.monotonic() + timeout
        url = None
        while time.monotonic() < deadline and self.process.poll() is None:
            text = log.read_text(errors="replace")
            if url is None and "listening on " in text:
                url = text.split("listening on ", 1)[1].split()[0]
            if url is not None:
                try:
                    with urllib.request.urlopen(f"{url}/health/ready", timeout=5):
                        return url
                except OSError:
                    pass
            time.sleep(0.1)
        raise Irv2Error("the benchmark's server did not become ready: "
                        + log.read_text(errors="replace").strip()[-500:])

    def footprint(self) -> tuple[float, int]:
        """(resident memory in MB, open file descriptors)."""
        pid = self.process.pid
        with open(f"/proc/{pid}/status") as status:
            rss_kb = next(int(line.split()[1]) for line in status if line.startswith("VmRSS:"))
        return rss_kb / 1024, len(os.listdir(f"/proc/{pid}/fd"))

    def stop(self) -> None:
        self.process.send_signal(signal.SIGTERM)
        self.process.wait(timeout=60)
        self._log.close()

    def __enter__(self) -> Server:
        return self

    def __exit__(self, *exc_info) -> None:
        if self.process.poll() is None:
            self.stop()


def drive(url: str, images: list[Path], clients: int, requests: int,
          env: dict[str, str]) -> Load:
    """Post ``requests`` of ``images`` to ``url``'s /v1/predict from ``clients`` concurrent
    clients, in a process of their own."""
    result = subprocess.run(
        python_call("irv2cli.bench.http_client", "post_images", f"{url}/v1/predict",
                    [str(image) for image in images], clients, requests, LIMIT_SECONDS),
        env=env, check=True, capture_output=True)
    data = json.loads(result.stdout)
    if not data["latencies"]:
        raise Irv2Error(f"no request succeeded: statuses {data['statuses']}")
    return Load(data["latencies"], data["elapsed"], data["statuses"])


def _small_image(source: Path, target: Path) -> Path:
    from PIL import Image

    with Image.open(source) as image:
        image.convert("RGB").resize(SMALL_IMAGE_SIZE).save(target, quality=90)
    return target


def run_serve_benchmark(settings: ServeBenchSettings, progress=print
                        ) -> tuple[list[ServeMeasurement], Soak | None]:
    """Every measurement of ``irv2 bench --serve``, precision by precision, then the soak
    (on the last precision)."""
    with prepared(settings.images, settings.weights, progress) as (
            sources, scratch, env, weights, calibration):
        build_runtimes(weights, sources[0], calibration, env, progress)
        small = _small_image(sources[0], scratch / "small.jpg")
        folders = (make_folder(scratch / "predict-small", 8, sources),
                   make_folder(scratch / "predict-large", 40, sources))
        broken = scratch / "broken.jpg"
        broken.write_bytes(sources[0].read_bytes()[:2000])
        results, soak = [], None
        for precision in settings.precisions:
            progress(f"{precision}: irv2 predict DIR at batch 8...")
            predict = measure(Pipeline(f"irv2 predict {precision}", "onnx",
                                       keras_preprocessing=False, precision=precision),
                              8, *folders, weights, scratch, env)
            progress(f"{precision}: the engine alone at batch 1...")
            engine = json.loads(subprocess.run(
                python_call("irv2cli.bench.serving", "time_engine", weights, precision,
                            small, 30), env=env, check=True, capture_output=True).stdout)
            progress(f"{precision}: irv2 serve, 1 client, then {CLIENTS} clients...")
            with Server(weights, precision, env, scratch / f"serve-{precision}.log") as server:
                drive(server.url, sources, CLIENTS, WARM_UP_REQUESTS, env)
                single = drive(server.url, [small], 1, settings.single, env)
                concurrent = drive(server.url, sources, CLIENTS, settings.concurrent, env)
                results.append(ServeMeasurement(precision, engine, single, concurrent,
                                                predict.images_per_second))
                if settings.soak and precision == settings.precisions[-1]:
                    progress(f"{precision}: soak of {settings.soak:,} requests...")
                    rss, fds = server.footprint()
                    load = drive(server.url, [*sources, broken], CLIENTS, settings.soak, env)
                    rss_after, fds_after = server.footprint()
                    soak = Soak(precision, load, rss, rss_after, fds, fds_after)
        return results, soak
