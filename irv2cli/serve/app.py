"""The HTTP application: routes, readiness and the path of one request.

A request is admitted only when the server is ready and its queue has room (else 503
with ``Retry-After``); its body is read whole (``uploads``), each image decoded by an
isolated worker, then batched with other requests' images for the engine. Records have
the shape ``irv2 predict --format jsonl`` writes.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import sys
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from typing import TypeVar

import numpy as np
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ..engines.base import Engine, load_engine
from ..errors import Irv2Error
from ..inputs.decoding import DecodePool, default_workers
from ..results.labels import decode_top_k
from ..results.records import Record
from ..results.writers import json_line
from ..spec import FEATURES, PROBABILITIES, SPEC
from ..version import __version__
from .batcher import Batcher, answer_from_thread
from .metrics import Metrics
from .options import ServeOptions
from .uploads import BodyLimits, RequestRefused, Upload, read_uploads

T = TypeVar("T")
MODEL = "irv2"
RETRY_AFTER = "1"  # seconds a refused client should wait before it tries again
OCTET_STREAM = "application/octet-stream"


@dataclass
class Service:
    """What the routes share: the options, the engine and decoders once loaded, the
    batcher, the metrics, and where the server stands (``starting``, ``ready``,
    ``draining``, or ``failed`` with ``failure``)."""

    options: ServeOptions
    notify: Callable[[str], None]
    on_failure: Callable[[Exception], None]
    metrics: Metrics = field(init=False)
    state: str = "starting"
    failure: Exception | None = None
    engine: Engine | None = None
    decoders: DecodePool | None = None
    batcher: Batcher | None = None
    queued: int = 0  # images accepted and not yet answered

    def __post_init__(self) -> None:
        self.metrics = Metrics(self.options.max_batch)

    async def start(self) -> None:
        """Load the engine and start the decoders, warm both up, then be ready; a failure
        is kept in ``failure`` and handed to ``on_failure``."""
        started = time.perf_counter()
        options = self.options
        try:
            self.decoders = await _on_own_thread(
                lambda: DecodePool(options.workers or default_workers(), options.decode_limits))
            self.engine = await _on_own_thread(self._load_engine)
            await _on_own_thread(self._warm_up)
        except Exception as exc:
            self.state, self.failure = "failed", exc
            self.on_failure(exc)
            return
        self.batcher = Batcher(self.engine, options.max_batch, options.max_delay,
                               self.metrics.batch, options.calls_at_once)
        self.metrics.engine.info({"backend": options.backend, "precision": options.precision,
                                  "outputs": ",".join(self.engine.outputs),
                                  "concurrent_batches": str(options.calls_at_once),
                                  "version": __version__})
        if self.state == "starting":  # not asked to stop meanwhile
            self.state = "ready"
            self.metrics.ready.set(1)
            self.notify(f"ready: {options.precision} engine warm in "
                        f"{time.perf_counter() - started:.1f} s")

    def _load_engine(self) -> Engine:
        weights = self.options.weights
        if weights is None:
            from ..store.weights import ensure_weights

            weights = ensure_weights(notify=self.notify)
        return load_engine(weights, self.options.backend, self.notify, self.options.precision)

    def _warm_up(self) -> None:
        """One inference at batch 1 and one at the largest batch: the first call of each
        shape allocates, and no request should pay for that."""
        for size in sorted({1, self.options.max_batch}):
            self.engine(np.zeros((size, SPEC.input_size, SPEC.input_size, 3), np.float32))

    def drain(self) -> None:
        """Stop admitting work: readiness says 503 from now on."""
        if self.state in ("starting", "ready"):
            self.state = "draining"
            self.metrics.ready.set(0)

    async def stop(self) -> None:
        """Answer what is queued, then stop the engine's thread and the decoders."""
        self.drain()
        if self.batcher is not None:
            await asyncio.to_thread(self.batcher.close)
        if self.decoders is not None:
            await asyncio.to_thread(self.decoders.close)

    @contextlib.contextmanager
    def admitted(self) -> Iterator[Callable[[int], None]]:
        """Admit a request, or refuse it (503) when the server is not ready or its queue is
        full. Its body, while it is read, holds one place in the queue (so the memory of
        bodies being read is bounded too); ``take(n)`` then counts its ``n`` images
        instead, or refuses them when they do not fit. Its places are freed when it is
        answered."""
        if self.state != "ready":
            raise RequestRefused(503, self.not_ready_reason(), {"Retry-After": RETRY_AFTER})
        if self.queued >= self.options.max_queue:
            self.metrics.rejected.labels("queue_full").inc()
            raise RequestRefused(503, f"the server's queue is full ({self.options.max_queue} "
                                      "images); try again shortly",
                                 {"Retry-After": RETRY_AFTER})
        taken = 1
        self._count(taken)

        def take(count: int) -> None:
            nonlocal taken
            if self.queued - taken + count > self.options.max_queue:
                self.metrics.rejected.labels("queue_full").inc()
                raise RequestRefused(503, "the server's queue has no room for "
                                          f"{count} more images; try again shortly",
                                     {"Retry-After": RETRY_AFTER})
            self._count(count - taken)
            taken = count

        try:
            yield take
        finally:
            self._count(-taken)

    def _count(self, change: int) -> None:
        self.queued += change
        self.metrics.queue_depth.set(self.queued)

    def not_ready_reason(self) -> str:
        """Why the server takes no work now."""
        if self.state == "failed":
            return f"the engine failed to load: {self.failure}"
        if self.state == "draining":
            return "the server is shutting down"
        return "the engine is still loading"

    async def outputs(self, upload: Upload) -> dict[str, np.ndarray] | str:
        """The engine's outputs for one upload, or why it could not be decoded."""
        batcher = self.batcher
        batcher.expect()
        try:
            outcome = await asyncio.wrap_future(
                self.decoders.submit(upload.name, self.options.preprocessing, upload.data))
        except BaseException:
            batcher.forget()
            raise
        if isinstance(outcome, str):
            batcher.forget()
            self.metrics.decode_failures.inc()
            return outcome
        return await batcher.infer(outcome.pixels)


async def _on_own_thread(function: Callable[[], T]) -> T:
    """``function()`` on a daemon thread of its own: a server stopped while its engine
    loads (or builds) does not wait for the load to end."""
    answer = asyncio.get_running_loop().create_future()

    def call() -> None:
        try:
            result = function()
        except BaseException as exc:
            answer_from_thread(answer, exception=exc)
        else:
            answer_from_thread(answer, result)

    threading.Thread(target=call, name="irv2-serve-start", daemon=True).start()
    return await answer


def _top_k(request: Request, default: int) -> int:
    text = request.query_params.get("top_k")
    if text is None:
        return default
    value = int(text) if re.fullmatch("[0-9]{1,4}", text) else 0
    if not 1 <= value <= SPEC.num_classes:
        raise RequestRefused(400, f"top_k must be a whole number from 1 to {SPEC.num_classes}, "
                                  f"not {text!r}")
    return value


def _prefers_octet_stream(accept: str) -> bool:
    """Whether an ``Accept`` header asks for float32 bytes: it names
    application/octet-stream with a weight above 0 and above application/json's."""
    weights: dict[str, float] = {}
    for item in accept.split(","):
        media, *parameters = (part.strip().lower() for part in item.split(";"))
        weight = 1.0
        for parameter in parameters:
            name, _, value = parameter.partition("=")
            if name.strip() == "q":
                try:
                    weight = float(value)
                except ValueError:
                    weight = 0.0
        weights[media] = weight
    octets = weights.get(OCTET_STREAM, 0.0)
    return octets > 0 and octets > weights.get("application/json", 0.0)


def _json(data: dict, status: int = 200) -> Response:
    """``data`` as UTF-8 JSON; non-UTF-8 names as ``\\udcXX`` escapes, like the files."""
    return Response(json_line(data), status, media_type="application/json")


def _records_response(records: list[Record], body: list[dict]) -> Response:
    """200 with the records, or 422 (with the first error on top) when no image of the
    request could be decoded."""
    if all(record.error for record in records):
        return _json({"error": records[0].error, "records": body}, 422)
    return _json({"records": body})


def create_app(options: ServeOptions = ServeOptions(),
               notify: Callable[[str], None] = lambda message: print(message, file=sys.stderr),
               on_failure: Callable[[Exception], None] = lambda exc: None) -> Starlette:
    """The server's ASGI application. It loads its engine as it starts (the lifespan's
    startup returns at once, so health probes answer meanwhile); ``notify`` hears status
    lines, ``on_failure`` an engine that could not load. ``app.state.service`` is its
    ``Service``."""
    service = Service(options, notify, on_failure)

    async def answer(request: Request, make: Callable[[Upload, object], Record]) -> list[Record]:
        with service.admitted() as take:
            uploads = await read_uploads(request, options.max_queue)
            take(len(uploads))
            # every image through (its place in the queue held), then the first failure
            results = await asyncio.gather(*(service.outputs(u) for u in uploads),
                                           return_exceptions=True)
        for result in results:
            if isinstance(result, BaseException):
                raise result
        return [Record(u.name, error=r) if isinstance(r, str) else make(u, r)
                for u, r in zip(uploads, results, strict=True)]

    async def predict(request: Request) -> Response:
        top_k = _top_k(request, options.top_k)
        if service.engine is not None and PROBABILITIES not in service.engine.outputs:
            raise RequestRefused(501, "the server runs feature-extractor (notop) weights: "
                                      "they give features (POST /v1/embed), not classes")
        records = await answer(request, lambda upload, outputs: Record(
            upload.name, predictions=decode_top_k(outputs[PROBABILITIES], top_k)))
        return _records_response(records, [record.to_dict() for record in records])

    async def embed(request: Request) -> Response:
        records = await answer(request, lambda upload, outputs: Record(
            upload.name, features=outputs[FEATURES]))
        if _prefers_octet_stream(request.headers.get("accept", "")):
            failed = [record.error for record in records if record.error]
            if failed:
                return _json({"error": failed[0], "failed": len(failed)}, 422)
            matrix = np.stack([record.features for record in records]).astype("<f4")
            return Response(matrix.tobytes(), media_type=OCTET_STREAM,
                            headers={"X-Irv2-Shape": ",".join(map(str, matrix.shape)),
                                     "Vary": "Accept"})
        response = _records_response(records, [
            {"path": record.path, "error": record.error,
             "features": None if record.error else record.features.tolist()}
            for record in records])
        response.headers["Vary"] = "Accept"
        return response

    async def live(request: Request) -> Response:
        return _json({"live": True})

    async def ready(request: Request) -> Response:
        if service.state == "ready":
            return _json({"ready": True})
        return _json({"ready": False, "reason": service.not_ready_reason()}, 503)

    async def model_metadata(request: Request) -> Response:
        engine = service.engine
        return _json({
            "name": MODEL, "versions": [__version__],
            "platform": "keras" if options.backend == "keras" else "onnxruntime",
            "inputs": [{"name": "image", "datatype": "BYTES", "shape": [-1]}],
            "outputs": [{"name": name, "datatype": "FP32",
                         "shape": [-1, SPEC.num_classes if name == PROBABILITIES
                                   else SPEC.feature_dim]}
                        for name in (engine.outputs if engine else ())],
            "precision": options.precision})

    async def server_metadata(request: Request) -> Response:
        return _json({"name": "irv2cli", "version": __version__, "extensions": []})

    async def metrics(request: Request) -> Response:
        return Response(service.metrics.exposition(), media_type=service.metrics.content_type)

    routes = [
        Route("/v1/predict", predict, methods=["POST"]),
        Route("/v1/embed", embed, methods=["POST"]),
        Route("/health/live", live), Route("/health/ready", ready),
        Route("/v2/health/live", live), Route("/v2/health/ready", ready),
        Route("/v2", server_metadata), Route(f"/v2/models/{MODEL}", model_metadata),
        Route(f"/v2/models/{MODEL}/ready", ready),
        Route("/metrics", metrics),
    ]

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        loading = asyncio.create_task(service.start())
        try:
            yield
        finally:
            service.drain()
            loading.cancel()  # a load still running is left to its daemon thread
            with contextlib.suppress(asyncio.CancelledError):
                await loading
            await service.stop()

    async def refused(request: Request, exc: RequestRefused) -> Response:
        return JSONResponse({"error": exc.message}, exc.status, headers=exc.headers)

    async def failed(request: Request, exc: Irv2Error) -> Response:
        return JSONResponse({"error": str(exc)}, 500)

    async def http_error(request: Request, exc: HTTPException) -> Response:
        message = exc.detail
        if exc.status_code == 404:
            message = (f"no such route: {request.url.path}; the routes are "
                       + ", ".join(route.path for route in routes))
        elif exc.status_code == 405:
            message = f"{request.method} is not allowed on {request.url.path}"
        return JSONResponse({"error": message}, exc.status_code, headers=exc.headers)

    app = Starlette(
        routes=routes, lifespan=lifespan,
        middleware=[Middleware(Measured, metrics=service.metrics,
                               routes=frozenset(route.path for route in routes)),
                    Middleware(BodyLimits, max_body=options.max_body,
                               timeout=options.client_timeout)],
        exception_handlers={RequestRefused: refused, HTTPException: http_error,
                            Irv2Error: failed})
    app.state.service = service
    return app


CLIENT_GONE = 499  # nginx's status for a client that went away before its answer


class Measured:
    """Counts each answer by route and status, and times it (``other`` for paths that are
    not routes, so a scan of random paths cannot grow the metrics)."""

    def __init__(self, app: ASGIApp, metrics: Metrics, routes: frozenset[str]):
        self.app, self.metrics, self.routes = app, metrics, routes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        path = scope["path"].removeprefix(scope.get("root_path", ""))  # mounted: its own
        route = path if path in self.routes else "other"
        status = CLIENT_GONE  # unless an answer starts (an app's failure is answered 500)

        async def observed(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, observed)
        finally:
            seconds = time.perf_counter() - started
            self.metrics.requests.labels(route, str(status)).inc()
            self.metrics.latency.labels(route).observe(seconds)
