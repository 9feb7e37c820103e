"""Run the application under uvicorn: listen, drain on SIGTERM, cut off slow clients.

SIGTERM, SIGINT (Ctrl-C) or SIGHUP: readiness goes to 503 at once, the listening socket
closes, requests in flight are answered, and the process ends with status 0 within
``drain_timeout`` seconds (what is still running then is cancelled). A second Ctrl-C
ends it at once.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import signal
import socket
import sys
from collections.abc import Callable, Iterator

import uvicorn
from uvicorn.protocols.http.h11_impl import H11Protocol

from ..errors import ServeError
from .app import create_app
from .options import ServeOptions

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


def header_deadline(timeout: float) -> type[H11Protocol]:
    """uvicorn's HTTP/1.1 protocol, except that a client must send each request's headers
    within ``timeout`` seconds of connecting (or of its first byte, on a kept-alive
    connection); uvicorn alone waits for them for ever."""

    class HeaderDeadline(H11Protocol):
        _deadline: object = None

        def connection_made(self, transport) -> None:  # type: ignore[override]
            super().connection_made(transport)
            self._arm()

        def data_received(self, data: bytes) -> None:
            if self._deadline is None and self._between_requests():
                self._arm()
            super().data_received(data)
            if not self._between_requests():
                self._disarm()

        def connection_lost(self, exc: Exception | None) -> None:
            self._disarm()
            super().connection_lost(exc)

        def _between_requests(self) -> bool:
            return self.cycle is None or self.cycle.response_complete

        def _arm(self) -> None:
            self._deadline = self.loop.call_later(timeout, self._too_slow)

        def _disarm(self) -> None:
            if self._deadline is not None:
                self._deadline.cancel()
                self._deadline = None

        def _too_slow(self) -> None:
            self._deadline = None
            if self._between_requests() and not self.transport.is_closing():
                self.transport.close()

    return HeaderDeadline


class DrainingServer(uvicorn.Server):
    """uvicorn's server, with readiness set to 503 the moment a stop is asked for."""

    def __init__(self, config: uvicorn.Config, drain: Callable[[], None],
                 notify: Callable[[str], None]):
        super().__init__(config)
        self._drain, self._notify = drain, notify

    def handle_exit(self, sig: int, frame) -> None:
        if not self.should_exit:
            self._notify(f"{signal.Signals(sig).name}: answering the requests in flight, "
                         f"then stopping (at most {self.config.timeout_graceful_shutdown} s)")
        self._drain()
        super().handle_exit(sig, frame)


def listen(host: str, port: int) -> socket.socket:
    """A listening TCP socket on ``host``:``port`` (0: any free port); ``ServeError`` in one
    line when the address cannot be had."""
    try:
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        # IPPROTO_TCP named, not 0: asyncio sets TCP_NODELAY only on sockets that say so,
        # and without it each answer's body waits 40 ms for the client's delayed ACK.
        sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    except OSError as exc:
        raise ServeError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen(2048)
    except (OSError, OverflowError) as exc:
        sock.close()
        advice = ("; another program listens there: choose another port"
                  if getattr(exc, "errno", None) == errno.EADDRINUSE else "")
        reason = getattr(exc, "strerror", None) or str(exc)
        raise ServeError(f"cannot listen on {host}:{port}: {reason}{advice}") from None
    sock.set_inheritable(True)
    return sock


@contextlib.contextmanager
def _stop_signals_to(server: DrainingServer) -> Iterator[None]:
    """Each stop signal asks ``server`` to drain meanwhile. (uvicorn takes SIGINT and
    SIGTERM itself while it runs, and raises them again once it has stopped: they then
    find this handler, and a drained server ends with status 0.)"""
    previous = {sig: signal.signal(sig, server.handle_exit) for sig in STOP_SIGNALS}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def serve(options: ServeOptions, host: str = "127.0.0.1", port: int = 8000, *,
          drain_timeout: float = 30.0, access_log: bool = False,
          notify: Callable[[str], None] = print) -> None:
    """Serve until a stop signal, then drain; ``ServeError`` if the address cannot be had,
    and the engine's own error if it fails to load."""
    sock = listen(host, port)
    bound_host, bound_port = sock.getsockname()[:2]
    server: DrainingServer | None = None

    def failed(exc: Exception) -> None:
        if server is not None:
            server.should_exit = True

    app = create_app(options, notify, failed)
    service = app.state.service
    config = uvicorn.Config(app, lifespan="on", log_level="warning", access_log=access_log,
                            http=header_deadline(options.client_timeout),
                            timeout_graceful_shutdown=max(1, round(drain_timeout)),
                            timeout_keep_alive=5)
    if access_log:  # uvicorn's own lines stay at warnings; its access lines are at info,
        access = logging.getLogger("uvicorn.access")  # on stderr with irv2's lines
        access.setLevel(logging.INFO)
        for handler in access.handlers:
            if isinstance(handler, logging.StreamHandler):
                handler.setStream(sys.stderr)
    server = DrainingServer(config, service.drain, notify)
    shown_host = f"[{bound_host}]" if ":" in bound_host else bound_host
    notify(f"listening on http://{shown_host}:{bound_port} (ready once the engine is warm; "
           "Ctrl-C or SIGTERM drains and stops)")
    with _stop_signals_to(server):
        server.run(sockets=[sock])
    if service.failure is not None:
        raise service.failure
    notify("stopped")
