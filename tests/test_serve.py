"""``irv2 serve``: a real server on a free loopback port, asked by a real HTTP client.

Most tests share one server process (the session's generated weights, the misbehaving
test decoder on its workers' path); the drain and start-up tests start their own.
Answers must equal what ``irv2 predict`` and ``irv2 embed`` write for the same images.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import statistics
import sys
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import numpy as np
import pytest
from click.testing import CliRunner
from support import (
    Irv2Process,
    build_children,
    decoding_workers_of,
    hostile_folder,
    hostile_pythonpath,
)

from irv2cli import RunOptions, run
from irv2cli.cli.main import cli
from irv2cli.spec import FEATURES

pytestmark = pytest.mark.slow  # every test starts or talks to a server process

CLIENT_TIMEOUT = 2.0  # the shared server's --client-timeout, so slow clients are cut fast


class Server:
    """``irv2 serve --port 0 ARGS`` as a process, its URL once it listens."""

    def __init__(self, *args):
        self.irv2 = Irv2Process("serve", "--port", "0", *args)
        self.irv2.wait_until(lambda: "listening on " in self.irv2.stderr, timeout=120)
        self.url = self.irv2.stderr.split("listening on ", 1)[1].split()[0]
        self.host, port = self.url.removeprefix("http://").rsplit(":", 1)
        self.port = int(port)

    def wait_ready(self) -> None:
        self.irv2.wait_until(lambda: _status(f"{self.url}/health/ready") == 200, timeout=120)

    @property
    def pid(self) -> int:
        return self.irv2.process.pid

    def descriptors(self) -> int:
        return len(os.listdir(f"/proc/{self.pid}/fd"))

    def metric(self, name: str, **labels: str) -> float:
        """The value of one sample of /metrics (0 if absent)."""
        wanted = name + ("{" + ",".join(f'{k}="{v}"' for k, v in labels.items()) + "}"
                         if labels else "")
        for line in httpx.get(f"{self.url}/metrics").text.splitlines():
            if line.startswith(wanted + " "):
                return float(line.split()[-1])
        return 0.0

    def connect(self) -> socket.socket:
        return socket.create_connection((self.host, self.port), timeout=10)


def _status(url: str) -> int | None:
    try:
        return httpx.get(url, timeout=2).status_code
    except httpx.HTTPError:
        return None


@contextlib.contextmanager
def serving(*args, env: dict[str, str] | None = None) -> Iterator[Server]:
    """A server process, stopped (SIGTERM) on leaving."""
    with pytest.MonkeyPatch.context() as patch:
        for name, value in (env or {}).items():
            patch.setenv(name, value)
        server = Server(*args)
    try:
        yield server
    finally:
        if server.irv2.process.poll() is None:
            server.irv2.stop(signal.SIGTERM)


@pytest.fixture(scope="module")
def server(top_weights, built_runtime, session_homes) -> Iterator[Server]:
    """The module's server: the generated weights (their runtime already built), the
    misbehaving decoder on its workers' path, small decoding limits, a short client
    timeout, two engine calls at once (int8's default, here in fp32)."""
    with serving("--weights", top_weights, "--decode-memory", "256MiB", "--decode-timeout",
                 "2", "--client-timeout", CLIENT_TIMEOUT, "--workers", "2",
                 "--concurrent-batches", "2",
                 env={"IRV2_HOME": str(session_homes(top_weights)),
                      "PYTHONPATH": hostile_pythonpath()}) as started:
        started.wait_ready()
        yield started


@pytest.fixture
def client(server) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.url, timeout=60) as http:
        yield http


def still_serves(client: httpx.Client, samples: Path) -> None:
    answer = client.post("/v1/predict", content=(samples / "coffee.jpg").read_bytes())
    assert answer.status_code == 200 and answer.json()["records"][0]["predictions"]


# --- answers ------------------------------------------------------------------------------

def test_predict_answers_the_records_irv2_predict_writes(client, weights, photos, tmp_path):
    run([photos], tmp_path / "expected.jsonl", RunOptions(weights=weights, top_k=3))
    expected = {Path(r["path"]).name: r for r in map(
        json.loads, (tmp_path / "expected.jsonl").read_text().splitlines())}

    one_by_one = {path.name: client.post(f"/v1/predict?top_k=3&name={path.name}",
                                         content=path.read_bytes()).json()["records"][0]
                  for path in sorted(photos.iterdir())}
    parts = client.post("/v1/predict?top_k=3", files=[
        ("image", (path.name, path.read_bytes(), "image/jpeg"))
        for path in sorted(photos.iterdir())]).json()["records"]

    assert [r["path"] for r in parts] == sorted(expected)
    for answered in (one_by_one, {r["path"]: r for r in parts}):
        assert answered.keys() == expected.keys()
        for name, record in answered.items():
            want = expected[name]
            assert record["error"] is None
            assert [p["index"] for p in record["predictions"]] == [
                p["index"] for p in want["predictions"]]
            assert [(p["rank"], p["wnid"], p["label"]) for p in record["predictions"]] == [
                (p["rank"], p["wnid"], p["label"]) for p in want["predictions"]]
            np.testing.assert_allclose([p["score"] for p in record["predictions"]],
                                       [p["score"] for p in want["predictions"]], atol=1e-5)


def test_embed_answers_irv2_embed_features_as_json_or_float32_bytes(client, weights, photos,
                                                                     tmp_path):
    run([photos], tmp_path / "expected.npy", RunOptions(weights=weights, outputs=(FEATURES,)))
    expected = np.load(tmp_path / "expected.npy")
    paths = sorted(photos.iterdir())
    files = [("image", (p.name, p.read_bytes(), "image/jpeg")) for p in paths]

    as_json = client.post("/v1/embed", files=files).json()["records"]
    as_bytes = client.post("/v1/embed", files=files,
                           headers={"Accept": "application/octet-stream"})

    assert [r["path"] for r in as_json] == [p.name for p in paths]
    np.testing.assert_allclose([r["features"] for r in as_json], expected, atol=1e-5)
    assert as_bytes.headers["x-irv2-shape"] == f"{len(paths)},1536"
    np.testing.assert_allclose(
        np.frombuffer(as_bytes.content, "<f4").reshape(len(paths), 1536), expected, atol=1e-5)


def test_concurrent_requests_are_batched(server, client, samples):
    before = (server.metric("irv2_batch_size_count"), server.metric("irv2_batch_size_sum"))
    body = (samples / "chelsea.jpg").read_bytes()
    with ThreadPoolExecutor(16) as pool:
        answers = list(pool.map(lambda _: client.post("/v1/predict", content=body), range(32)))

    assert {answer.status_code for answer in answers} == {200}
    calls = server.metric("irv2_batch_size_count") - before[0]
    images = server.metric("irv2_batch_size_sum") - before[1]
    assert images == 32 and calls < 32  # some engine calls ran several requests' images
    assert server.metric("irv2_batch_size_bucket", le="1.0") < server.metric(
        "irv2_batch_size_count")


def test_health_metadata_and_metrics(server, client, samples):
    for path in ("/health/live", "/health/ready", "/v2/health/live", "/v2/health/ready",
                 "/v2/models/irv2/ready"):
        assert client.get(path).status_code == 200, path
    model = client.get("/v2/models/irv2").json()
    assert model["name"] == "irv2" and model["platform"] == "onnxruntime"
    assert {o["name"]: o["shape"] for o in model["outputs"]} == {
        "probabilities": [-1, 1000], "features": [-1, 1536]}

    before = server.metric("irv2_requests_total", route="/v1/predict", status="200")
    still_serves(client, samples)
    client.get("/no/such/route")
    assert server.metric("irv2_requests_total", route="/v1/predict",
                         status="200") == before + 1
    assert server.metric("irv2_requests_total", route="other", status="404") >= 1
    assert server.metric("irv2_queue_depth") == 0
    assert server.metric("irv2_ready") == 1
    engine = client.get("/metrics").text
    assert 'precision="fp32"' in engine and 'concurrent_batches="2"' in engine
    assert server.metric("irv2_request_duration_seconds_count", route="/v1/predict") >= 1


def test_answers_on_a_kept_alive_connection_go_out_at_once(server):
    """Without TCP_NODELAY on the server's connections, each answer's body waited for
    the client's delayed ACK: 40 ms more a request on a kept-alive connection."""
    took = []
    with httpx.Client(base_url=server.url) as http:
        for _ in range(11):
            started = time.perf_counter()
            assert http.get("/health/live").status_code == 200
            took.append(time.perf_counter() - started)
    assert statistics.median(took[1:]) < 0.03


def test_the_benchmark_client_measures_answers_from_a_process_of_its_own(server, samples):
    from irv2cli.bench.serving import drive

    load = drive(server.url, [samples / "chelsea.jpg", samples / "coffee.jpg"], 2, 6,
                 dict(os.environ))
    assert load.statuses == {"200": 6} and len(load.latencies) == 6
    assert 0 < load.median <= load.p99 and load.rate > 0


# --- requests that cannot be answered -------------------------------------------------------

@pytest.mark.parametrize(("request_", "status", "said"), [
    ({"content": b""}, 400, "no body"),
    ({"content": b"not an image"}, 422, "upload: not an image Pillow can read"),
    ({"content": b"x", "headers": {"Content-Type": "multipart/form-data"}}, 400, "boundary"),
    ({"content": b"--b\r\nnonsense", "headers": {
        "Content-Type": "multipart/form-data; boundary=b"}}, 400, ""),
    ({"data": {"field": "text only"}, "files": {"f": ("", b"")}}, 400, ""),
    ({"params": {"top_k": "zero"}, "content": b"x"}, 400, "top_k must be a whole number"),
    ({"params": {"top_k": "1001"}, "content": b"x"}, 400, "top_k"),
    ({"params": {"top_k": "1_0"}, "content": b"x"}, 400, "top_k"),
    ({"content": b"--b\r\nContent-Disposition: form-data; name=a; filename=a.jpg\r\n\r\n"
                 b"\xff\xd8 and then nothing", "headers": {
        "Content-Type": "multipart/form-data; boundary=b"}}, 400, "cut short"),
], ids=["empty", "not-an-image", "no-boundary", "malformed-multipart", "no-file-parts",
        "top_k-word", "top_k-too-big", "top_k-underscore", "multipart-cut-short"])
def test_a_request_that_cannot_be_answered_is_one_json_error(client, samples, request_,
                                                             status, said):
    answer = client.post("/v1/predict", **request_)
    assert answer.status_code == status
    error = answer.json()["error"]
    assert said in error and "\n" not in error
    still_serves(client, samples)


@pytest.mark.parametrize("content_type", [None, "application/json", "text/plain; charset=x",
                                          "image/png"])
def test_an_image_is_read_whatever_its_content_type_says(server, samples, content_type):
    body = (samples / "chelsea.jpg").read_bytes()
    typed = "" if content_type is None else f"Content-Type: {content_type}\r\n"
    answer = _raw_request(server, (f"POST /v1/predict?top_k=1 HTTP/1.1\r\nHost: x\r\n{typed}"
                                   f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
                                   ).encode(), body)  # raw: httpx would name a type itself
    assert answer.startswith(b"HTTP/1.1 200 ")
    assert json.loads(answer.split(b"\r\n\r\n", 1)[1])["records"][0]["predictions"]


def test_some_broken_parts_are_error_records_beside_the_good_ones(client, samples):
    answer = client.post("/v1/predict", files=[
        ("a", ("good.jpg", (samples / "chelsea.jpg").read_bytes(), "image/jpeg")),
        ("b", ("bad.jpg", b"\xff\xd8 not really", "image/jpeg"))])
    assert answer.status_code == 200
    good, bad = answer.json()["records"]
    assert good["predictions"] and good["error"] is None
    assert bad["predictions"] == [] and bad["error"].startswith("bad.jpg: ")


def test_a_multipart_type_is_known_in_any_case(client, samples):
    image = (samples / "chelsea.jpg").read_bytes()
    body = (b"--B\r\nContent-Disposition: form-data; name=a; filename=x.jpg\r\n\r\n" + image
            + b"\r\n--B--\r\n")
    answer = client.post("/v1/predict", content=body,
                         headers={"Content-Type": "Multipart/Form-Data; Boundary=B"})
    assert answer.status_code == 200 and answer.json()["records"][0]["path"] == "x.jpg"


@pytest.mark.parametrize(("accept", "octets"), [
    ("application/octet-stream", True), ("APPLICATION/OCTET-STREAM", True),
    ("application/octet-stream;q=0", False), ("application/json, application/octet-stream;q=0.1",
                                              False),
    ("application/octet-streamX", False), ("*/*", False), ("", False)])
def test_embed_answers_bytes_only_to_a_client_that_prefers_them(client, samples, accept, octets):
    answer = client.post("/v1/embed", content=(samples / "coffee.jpg").read_bytes(),
                         headers={"Accept": accept})
    assert answer.status_code == 200 and answer.headers["vary"] == "Accept"
    assert answer.headers["content-type"] == (
        "application/octet-stream" if octets else "application/json")


def test_routes_and_methods_that_do_not_exist(client):
    missing = client.get("/v1/classify")
    assert missing.status_code == 404 and "/v1/predict" in missing.json()["error"]
    wrong = client.get("/v1/predict")
    assert wrong.status_code == 405 and "GET" in wrong.json()["error"]


def test_hostile_images_cost_their_own_request_only(client, server, samples, tmp_path):
    folder = hostile_folder(tmp_path / "hostile", samples)
    answers = {path.name: client.post(f"/v1/predict?name={path.name}",
                                      content=path.read_bytes())
               for path in sorted(folder.iterdir())}

    assert {name: a.status_code for name, a in answers.items()
            if a.status_code not in (200, 422)} == {"g_empty.jpg": 400}  # no body at all
    assert answers["b_segfault.img"].json()["error"].endswith(
        "the decoder crashed (SIGSEGV); the file is probably corrupt or hostile.")
    assert "took longer than 2 s" in answers["b_sleep.img"].json()["error"]
    assert "needed more than 256 MiB" in answers["b_allocate.img"].json()["error"]
    assert answers["a_good.jpg"].status_code == answers["h_good.jpg"].status_code == 200
    assert server.metric("irv2_decode_failures_total") >= 5
    still_serves(client, samples)


def test_a_killed_decoding_worker_is_replaced(client, server, samples):
    workers = decoding_workers_of(server.pid)
    assert workers
    os.kill(workers[0], signal.SIGKILL)
    body = (samples / "rocket.jpg").read_bytes()
    answers = [client.post("/v1/predict", content=body) for _ in range(4)]
    assert all(a.status_code in (200, 422) for a in answers)
    assert answers[-1].status_code == 200
    still_serves(client, samples)


# --- limits ---------------------------------------------------------------------------------

def _raw_request(server: Server, head: bytes, body: bytes = b"") -> bytes:
    """Send ``head`` and ``body`` on a new connection; everything the server answers
    before it closes the connection."""
    with server.connect() as connection:
        connection.sendall(head + body)
        answer = b""
        while chunk := connection.recv(65536):
            answer += chunk
        return answer


def test_a_body_over_the_limit_is_413_before_it_is_read(server, client, samples):
    started = time.monotonic()
    answer = _raw_request(server, b"POST /v1/predict HTTP/1.1\r\nHost: x\r\n"
                                  b"Content-Length: 1073741824\r\n\r\n", b"\xff" * 1000)
    assert answer.startswith(b"HTTP/1.1 413 ")
    assert b"larger than the server's limit of 33,554,432 bytes" in answer
    assert time.monotonic() - started < CLIENT_TIMEOUT  # not waited for
    still_serves(client, samples)


def test_a_content_length_that_lies_either_way(server, client, samples):
    image = (samples / "chelsea.jpg").read_bytes()
    head = b"POST /v1/predict HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n"

    started = time.monotonic()
    longer = _raw_request(server, head % (len(image) + 1000), image)  # and then nothing
    assert longer.startswith(b"HTTP/1.1 408 ")
    assert CLIENT_TIMEOUT - 0.5 < time.monotonic() - started < CLIENT_TIMEOUT + 5

    shorter = _raw_request(server, head % 3000, image)  # the rest is no request at all
    assert shorter.startswith(b"HTTP/1.1 422 ") and b"cannot decode" in shorter
    still_serves(client, samples)


def test_a_client_too_slow_to_send_its_headers_is_cut_off(server, client, samples):
    with server.connect() as connection:
        connection.sendall(b"POST /v1/predict HTTP/1.1\r\n")
        started = time.monotonic()
        for _ in range(10):  # a header line every half second: never done
            try:
                connection.sendall(b"X-Slow: 1\r\n")
                if connection.recv(1, socket.MSG_DONTWAIT) == b"":
                    break
            except BlockingIOError:
                pass
            except OSError:
                break
            time.sleep(0.5)
        assert connection.recv(1) == b""  # closed by the server
    assert time.monotonic() - started < CLIENT_TIMEOUT + 1.5
    still_serves(client, samples)


def test_clients_that_go_away_or_send_no_body_leak_nothing(server, client, samples):
    image = (samples / "coffee.jpg").read_bytes()
    still_serves(client, samples)
    descriptors = server.descriptors()

    def no_body(_) -> bytes:  # announced far over the limit, never sent
        return _raw_request(server, b"POST /v1/embed HTTP/1.1\r\nHost: x\r\n"
                                    b"Content-Length: 999999999\r\n\r\n")[:12]

    with ThreadPoolExecutor(8) as pool:
        assert set(pool.map(no_body, range(1000))) == {b"HTTP/1.1 413"}
    gone, failed = (server.metric("irv2_requests_total", route="/v1/predict", status=status)
                    for status in ("499", "500"))
    for _ in range(20):
        with server.connect() as connection:  # gone mid-upload
            connection.sendall(b"POST /v1/predict HTTP/1.1\r\nHost: x\r\nContent-Length: "
                               b"%d\r\n\r\n" % len(image) + image[:5000])
        with server.connect() as connection:  # gone before the answer
            connection.sendall(b"POST /v1/predict HTTP/1.1\r\nHost: x\r\nContent-Length: "
                               b"%d\r\n\r\n" % len(image) + image)
    still_serves(client, samples)
    deadline = time.monotonic() + 30
    while True:  # the abandoned requests' images go through the engine meanwhile
        now, queued = server.descriptors(), server.metric("irv2_queue_depth")
        if (now <= descriptors and queued == 0) or time.monotonic() > deadline:
            break  # (each metric() is a connection of its own, closed a moment later)
        time.sleep(0.2)
    assert now <= descriptors and queued == 0
    assert "Traceback" not in server.irv2.stderr
    # counted as gone (nginx's 499), not as the server's failure
    assert server.metric("irv2_requests_total", route="/v1/predict", status="499") >= gone + 20
    assert server.metric("irv2_requests_total", route="/v1/predict", status="500") == failed


# --- a server's life ------------------------------------------------------------------------

class GatedEngine:
    """The in-memory test engine, each call waiting until ``gate`` is set."""

    def __init__(self):
        from pixel_engine import PixelEngine

        self.engine, self.gate = PixelEngine(), threading.Event()
        self.outputs = self.engine.outputs

    def __call__(self, batch):
        assert self.gate.wait(30)
        return self.engine(batch)


@pytest.fixture
def gated_engine(monkeypatch) -> Iterator[GatedEngine]:
    """The engine every app loads in this test: ``GatedEngine``, opened at the end."""
    from irv2cli.serve import app

    engine = GatedEngine()
    monkeypatch.setattr(app, "load_engine", lambda *args, **kwargs: engine)
    yield engine
    engine.gate.set()


@contextlib.contextmanager
def in_process(app) -> Iterator[str]:
    """``app`` under uvicorn on a thread of this process; its URL."""
    import uvicorn

    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=0,
                                           log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.01)
    try:
        yield f"http://127.0.0.1:{server.servers[0].sockets[0].getsockname()[1]}"
    finally:
        server.should_exit = True
        thread.join(30)


def wait_ready(http: httpx.Client, path: str = "/health/ready") -> None:
    deadline = time.monotonic() + 30
    while http.get(path).status_code != 200:
        assert time.monotonic() < deadline
        time.sleep(0.05)


def test_ready_only_once_warm_and_a_full_queue_is_503_with_retry_after(gated_engine, samples,
                                                                        tmp_path):
    from irv2cli.serve import ServeOptions, create_app

    engine = gated_engine
    app = create_app(ServeOptions(weights=tmp_path / "never-read.h5", max_queue=2, max_batch=1,
                                  workers=1), lambda message: None)
    body = (samples / "chelsea.jpg").read_bytes()
    with in_process(app) as url, httpx.Client(base_url=url) as http:
        for _ in range(10):  # the warm-up inference waits for the gate
            assert http.get("/health/live").status_code == 200
            not_ready = http.get("/health/ready")
            assert not_ready.status_code == 503
            assert http.post("/v1/predict", content=body).status_code == 503
            time.sleep(0.05)
        assert "still loading" in not_ready.json()["reason"]
        engine.gate.set()
        wait_ready(http, "/v2/health/ready")

        engine.gate.clear()
        with ThreadPoolExecutor(2) as pool:
            held = [pool.submit(http.post, "/v1/predict", content=body) for _ in range(2)]
            while "irv2_queue_depth 2.0" not in http.get("/metrics").text:
                time.sleep(0.02)
            refused = http.post("/v1/predict", content=body)
            engine.gate.set()
            assert [f.result().status_code for f in held] == [200, 200]
        assert refused.status_code == 503 and refused.headers["Retry-After"] == "1"
        assert "queue is full" in refused.json()["error"]
        too_many = http.post("/v1/predict", files=[("a", ("a.jpg", body)) for _ in range(3)])
        assert too_many.status_code == 400
        assert too_many.json()["error"].startswith("more than 2 images in one request")


def test_the_app_mounted_in_another_application_runs_with_its_lifespan(gated_engine, samples,
                                                                        tmp_path):
    """As docs/serve.md shows: Starlette runs no lifespan of a mounted app by itself."""
    from starlette.applications import Starlette
    from starlette.routing import Mount

    from irv2cli.serve import ServeOptions, create_app

    gated_engine.gate.set()
    irv2 = create_app(ServeOptions(weights=tmp_path / "never-read.h5", workers=1),
                      lambda message: None)

    @contextlib.asynccontextmanager
    async def lifespan(app):
        async with irv2.router.lifespan_context(irv2):
            yield

    outer = Starlette(routes=[Mount("/irv2", irv2)], lifespan=lifespan)
    with in_process(outer) as url, httpx.Client(base_url=url) as http:
        wait_ready(http, "/irv2/health/ready")
        answer = http.post("/irv2/v1/predict?top_k=2",
                           content=(samples / "chelsea.jpg").read_bytes())
        metrics = http.get("/irv2/metrics").text
    assert answer.status_code == 200
    assert len(answer.json()["records"][0]["predictions"]) == 2
    assert 'irv2_requests_total{route="/v1/predict",status="200"} 1.0' in metrics


def test_a_body_being_read_holds_a_place_in_the_queue(gated_engine, samples, tmp_path):
    """So the memory of bodies being read is bounded by --max-queue too."""
    from irv2cli.serve import ServeOptions, create_app

    gated_engine.gate.set()
    app = create_app(ServeOptions(weights=tmp_path / "never-read.h5", max_queue=1, workers=1),
                     lambda message: None)
    with in_process(app) as url, httpx.Client(base_url=url) as http:
        wait_ready(http)
        host, port = url.removeprefix("http://").rsplit(":", 1)
        with socket.create_connection((host, int(port))) as slow:
            slow.sendall(b"POST /v1/predict HTTP/1.1\r\nHost: x\r\nContent-Length: 9999\r\n"
                         b"\r\nonly the start")
            while "irv2_queue_depth 1.0" not in http.get("/metrics").text:
                time.sleep(0.02)
            refused = http.post("/v1/predict", content=(samples / "chelsea.jpg").read_bytes())
        assert refused.status_code == 503 and "queue is full" in refused.json()["error"]


def test_an_engine_that_fails_is_a_500_of_one_line_once_the_whole_request_is_done(
        monkeypatch, samples, tmp_path):
    """Its other images keep their places in the queue until they are through too."""
    from irv2cli.errors import EngineError
    from irv2cli.serve import ServeOptions, create_app
    from irv2cli.serve import app as serve_app

    class FailsThenWaits(GatedEngine):
        calls = 0

        def __call__(self, batch):
            self.calls += 1
            if self.calls == 2:  # the request's first image (the first call warms up)
                raise EngineError("the engine broke")
            return super().__call__(batch)

    engine = FailsThenWaits()
    monkeypatch.setattr(serve_app, "load_engine", lambda *args, **kwargs: engine)
    app = create_app(ServeOptions(weights=tmp_path / "never-read.h5", max_batch=1, workers=1),
                     lambda message: None)
    image = (samples / "chelsea.jpg").read_bytes()
    with in_process(app) as url, httpx.Client(base_url=url) as http, ThreadPoolExecutor(1) as pool:
        engine.gate.set()
        wait_ready(http)
        engine.gate.clear()
        answer = pool.submit(http.post, "/v1/predict",
                             files=[("a", ("a.jpg", image)), ("b", ("b.jpg", image))])
        while engine.calls < 3:  # the second image is in the engine, held by the gate
            time.sleep(0.01)
        assert not answer.done()
        assert "irv2_queue_depth 2.0" in http.get("/metrics").text
        engine.gate.set()
        assert answer.result().status_code == 500
        assert answer.result().json() == {"error": "the engine broke"}
        assert "irv2_queue_depth 0.0" in http.get("/metrics").text


def test_sigterm_drains_requests_in_flight_then_exits_0(top_weights, built_runtime,
                                                        session_homes, samples):
    body = (samples / "coffee.jpg").read_bytes()
    with serving("--weights", top_weights, "--workers", "2", "--max-batch", "2",
                 "--access-log", env={"IRV2_HOME": str(session_homes(top_weights))}) as server:
        server.wait_ready()
        with ThreadPoolExecutor(6) as pool, httpx.Client(base_url=server.url,
                                                         timeout=60) as http:
            in_flight = [pool.submit(http.post, "/v1/predict", content=body)
                         for _ in range(6)]
            server.irv2.wait_until(lambda: server.metric("irv2_queue_depth") >= 4)
            took = server.irv2.stop(signal.SIGTERM)
            answers = [future.result() for future in in_flight]
        assert [a.status_code for a in answers] == [200] * 6
        assert server.irv2.process.returncode == 0
        assert took < 30
        assert "SIGTERM: answering the requests in flight" in server.irv2.stderr
        assert server.irv2.stderr.rstrip().endswith("stopped")
        assert server.irv2.stderr.count('"POST /v1/predict HTTP/1.1" 200') == 6  # --access-log
        with pytest.raises(httpx.ConnectError):
            httpx.get(f"{server.url}/health/live")


def test_requests_still_running_when_the_drain_ends_are_503s_and_it_exits_in_time(
        top_weights, built_runtime, session_homes, samples):
    image = (samples / "coffee.jpg").read_bytes()
    with serving("--weights", top_weights, "--workers", "2", "--max-batch", "1",
                 "--concurrent-batches", "2", "--drain-timeout", "1",
                 env={"IRV2_HOME": str(session_homes(top_weights))}) as server:
        server.wait_ready()
        with ThreadPoolExecutor(12) as pool, httpx.Client(base_url=server.url,
                                                          timeout=60) as http:
            in_flight = [pool.submit(http.post, "/v1/predict",
                                     files=[(str(n), (f"{n}.jpg", image)) for n in range(4)])
                         for _ in range(12)]  # 48 images: seconds of work at batch 1
            server.irv2.wait_until(lambda: server.metric("irv2_queue_depth") >= 40)
            took = server.irv2.stop(signal.SIGTERM)
            answers = [future.result() for future in in_flight]
    statuses = sorted(answer.status_code for answer in answers)
    assert set(statuses) <= {200, 503} and 503 in statuses
    assert all("stopped before this request was answered" in answer.json()["error"]
               for answer in answers if answer.status_code == 503)
    assert server.irv2.process.returncode == 0
    assert took < 1 + 4  # the drain's time, the batch in the engine then, and stopping
    assert "Traceback" not in server.irv2.stderr


def test_sigterm_while_the_engine_is_still_being_built_stops_at_once(top_weights):
    """This test's cache holds no runtime for the weights: the server starts building one."""
    with serving("--weights", top_weights) as server:
        server.irv2.wait_until(lambda: build_children(top_weights))
        took = server.irv2.stop(signal.SIGTERM)
    assert server.irv2.process.returncode == 0 and took < 5
    assert "Traceback" not in server.irv2.stderr
    deadline = time.monotonic() + 10
    while build_children(top_weights):  # the build ends with the server
        assert time.monotonic() < deadline
        time.sleep(0.1)


def test_times_that_are_not_finite_numbers_are_usage_errors():
    for flag in ("--drain-timeout", "--client-timeout", "--max-delay-ms", "--decode-timeout"):
        for value in ("nan", "inf", "-1"):
            result = CliRunner().invoke(cli, ["serve", flag, value])
            assert result.exit_code == 2 and "is not a number" in result.output, (flag, value)
    too_big = CliRunner().invoke(cli, ["serve", "--max-body", "1e400"])
    assert too_big.exit_code == 2 and "is not a size" in too_big.output


def test_a_server_that_cannot_start_says_why_in_one_line(top_weights, tmp_path, monkeypatch):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        busy = CliRunner().invoke(cli, ["serve", "--port", str(port), "--weights",
                                        str(top_weights)])
    assert busy.exit_code == 1
    assert busy.output.startswith(f"Error: cannot listen on 127.0.0.1:{port}: ")
    assert "another program listens there" in busy.output

    no_int8 = Server("--weights", top_weights, "--precision", "int8")
    assert no_int8.irv2.wait() == 1
    assert "irv2 quantize --calibrate DIR" in no_int8.irv2.stderr
    assert "Traceback" not in no_int8.irv2.stderr

    monkeypatch.setitem(sys.modules, "uvicorn", None)  # as if the extra were not installed
    monkeypatch.delitem(sys.modules, "irv2cli.serve.server", raising=False)
    missing = CliRunner().invoke(cli, ["serve"])
    assert missing.exit_code == 1
    assert "pip install 'irv2cli[serve]'" in missing.output
