"""A real HTTP server on 127.0.0.1 that serves files and misbehaves when told to.

Each request takes the next action from ``WeightsServer.script`` (``Serve()`` once the
script is empty), so a test reads as the story of what the server does:

    server.script = [Cut(after=1_000_000), Serve()]   # drop the line once, then behave

Every request is recorded (path, Range header, status) and every body byte counted, so
tests can assert what the client asked for and how much was actually transferred.
"""

from __future__ import annotations

import re
import threading
from collections import deque
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


@dataclass(frozen=True)
class Serve:
    """Answer like a real file server: 200, or 206 for a satisfiable ``Range``, else 416."""

    honour_range: bool = True


@dataclass(frozen=True)
class Cut:
    """Promise the whole file (200, full Content-Length), send ``after`` bytes, hang up."""

    after: int


@dataclass(frozen=True)
class Status:
    """Answer with this HTTP error status and a short body."""

    code: int


Action = Serve | Cut | Status


@dataclass(frozen=True)
class Seen:
    """One request as the server saw it."""

    path: str
    range: str | None
    status: int


class WeightsServer(ThreadingHTTPServer):
    """``http.server`` serving ``files`` (name -> bytes) at ``base_url``."""

    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.files: dict[str, bytes] = {}
        self.script: deque[Action] = deque()
        self.requests: list[Seen] = []
        self.bytes_sent = 0
        self.full_serves = 0
        # Cleared by a test to hold every request before it is answered.
        self.gate = threading.Event()
        self.gate.set()
        self._lock = threading.Lock()

    @property
    def base_url(self) -> str:
        host, port = self.server_address[:2]
        return f"http://{host}:{port}/weights/"

    def next_action(self) -> Action:
        with self._lock:
            return self.script.popleft() if self.script else Serve()

    def record(self, seen: Seen) -> None:
        with self._lock:
            self.requests.append(seen)

    def sent(self, count: int, whole_file: bool) -> None:
        with self._lock:
            self.bytes_sent += count
            self.full_serves += whole_file


class _Handler(BaseHTTPRequestHandler):
    server: WeightsServer

    def do_GET(self) -> None:
        action = self.server.next_action()
        name = self.path.removeprefix("/weights/")
        body = self.server.files.get(name)
        requested = self.headers.get("Range")
        if body is None and not isinstance(action, Status):
            action = Status(404)

        match action:
            case Status(code):
                self._answer(code, requested, b"no\n", {})
            case Cut(after):
                self._answer(200, requested, body[:after],
                             {"Content-Length": str(len(body))})
            case Serve(honour_range):
                start = _range_start(requested) if honour_range else None
                if start is None:
                    self._answer(200, requested, body, {})
                elif start >= len(body):
                    self._answer(416, requested, b"",
                                 {"Content-Range": f"bytes */{len(body)}"})
                else:
                    self._answer(206, requested, body[start:], {
                        "Content-Range": f"bytes {start}-{len(body) - 1}/{len(body)}"})

    def _answer(self, code: int, requested: str | None, payload: bytes,
                headers: dict[str, str]) -> None:
        self.server.record(Seen(self.path, requested, code))
        self.server.gate.wait()
        self.send_response(code)
        headers.setdefault("Content-Length", str(len(payload)))
        for key, value in headers.items():
            self.send_header(key, value)
        self.end_headers()
        self.wfile.write(payload)
        whole = code == 200 and len(payload) == int(headers["Content-Length"]) > 0
        self.server.sent(len(payload) if code in (200, 206) else 0, whole)
        # HTTP/1.0: the connection closes when the handler returns, cut or not.

    def log_message(self, format: str, *args: object) -> None:
        pass  # keep pytest's output clean


def _range_start(header: str | None) -> int | None:
    match = re.fullmatch(r"bytes=(\d+)-", header or "")
    return int(match.group(1)) if match else None


@contextmanager
def running_server() -> Iterator[WeightsServer]:
    """A ``WeightsServer`` answering in a background thread until the block ends."""
    server = WeightsServer()
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.gate.set()  # never leave a handler waiting
        server.shutdown()
        server.server_close()
        thread.join()
