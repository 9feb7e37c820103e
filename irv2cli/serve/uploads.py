"""Reading a request's images: one as the raw body, or several as multipart file parts,
within the server's limits on size and time.

``BodyLimits`` is ASGI middleware: a body announced (``Content-Length``) or found larger
than ``max_body`` is a 413 before it is read in full, and a client that takes longer
than ``client_timeout`` to send its request, or to take each write of its answer, is cut
off; neither ever holds a decoder or the engine, which get only whole bodies. A client
that goes away before its request is read is simply forgotten; a request the server
stops (a drain that ran out of time) is a 503.
"""

from __future__ import annotations

import asyncio
import json
import logging
from dataclasses import dataclass

from python_multipart.exceptions import FormParserError
from python_multipart.multipart import Field, File, create_form_parser, parse_options_header
from starlette.requests import ClientDisconnect, Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

# python-multipart logs every malformed form it sees; the request's answer says it instead.
logging.getLogger("python_multipart").addHandler(logging.NullHandler())
logging.getLogger("python_multipart").propagate = False


class RequestRefused(Exception):
    """A request the server will not serve: its HTTP ``status`` and the one-line reason."""

    def __init__(self, status: int, message: str, headers: dict[str, str] | None = None):
        super().__init__(message)
        self.status, self.message, self.headers = status, message, headers or {}


@dataclass(frozen=True)
class Upload:
    """One uploaded image: the name its record carries, and its bytes."""

    name: str
    data: bytes


class _TooLarge(Exception):
    pass


class _TooSlow(Exception):
    pass


class BodyLimits:
    """Refuse bodies over ``max_body`` bytes (413) and cut off clients slower than
    ``timeout`` seconds, for the whole request or for each write of its answer."""

    def __init__(self, app: ASGIApp, max_body: int, timeout: float):
        self.app, self.max_body, self.timeout = app, max_body, timeout

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        announced = _content_length(scope)
        if announced is not None and announced > self.max_body:
            await _refuse(send, 413, self._too_large())
            return
        deadline = asyncio.get_running_loop().time() + self.timeout
        received = 0
        started = False

        async def limited_receive() -> Message:
            nonlocal received
            try:
                async with asyncio.timeout_at(deadline):
                    message = await receive()
            except TimeoutError:
                raise _TooSlow from None
            received += len(message.get("body", b""))
            if received > self.max_body:
                raise _TooLarge
            return message

        async def timed_send(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            async with asyncio.timeout(self.timeout):
                await send(message)

        try:
            await self.app(scope, limited_receive, timed_send)
        except _TooLarge:
            if not started:
                await _refuse(send, 413, self._too_large())
        except _TooSlow:
            if not started:
                await _refuse(send, 408, f"the request's body did not arrive within "
                                         f"{self.timeout:g} s")
        except TimeoutError:  # a write of the answer waited too long: the client is gone
            pass  # the answer is left incomplete, and the server closes the connection
        except ClientDisconnect:  # gone before its request was read: nobody to answer
            pass
        except asyncio.CancelledError:  # the server stopped it: a drain that ran out of time
            if not started:
                await _refuse(send, 503, "the server stopped before this request was "
                                         "answered; send it again")

    def _too_large(self) -> str:
        return (f"the request's body is larger than the server's limit of {self.max_body:,} "
                "bytes; send smaller images, or fewer per request")


def _content_length(scope: Scope) -> int | None:
    for name, value in scope["headers"]:
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None  # the HTTP server refuses it before the app is called
    return None


async def _refuse(send: Send, status: int, message: str) -> None:
    """Answer ``status`` with ``message``, and have the connection closed (the rest of
    the body is never read)."""
    body = json.dumps({"error": message}).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"),
                            (b"content-length", str(len(body)).encode()),
                            (b"connection", b"close")]})
    await send({"type": "http.response.body", "body": body})


async def read_uploads(request: Request, max_images: int) -> list[Upload]:
    """The images of ``request``: its multipart file parts (at most ``max_images``), or
    its whole body as one image named by the ``name`` query parameter (default
    ``upload``). The body is read whole first; a form is parsed on a thread, so a costly
    one holds neither the event loop nor the client's time limit. ``RequestRefused``
    (400) for an empty body, or a form that is malformed, cut short, has no file parts
    or too many."""
    body = await request.body()
    if not body:
        raise RequestRefused(400, "the request has no body: send one image as the body, or "
                                  "several as multipart/form-data file parts")
    content_type = request.headers.get("content-type", "")
    if content_type.lower().startswith("multipart/form-data"):
        return await asyncio.to_thread(_parts, content_type, body, max_images)
    return [Upload(request.query_params.get("name", "upload"), body)]


def _parts(content_type: str, body: bytes, max_images: int) -> list[Upload]:
    """The file parts of a multipart/form-data ``body``."""
    boundary = parse_options_header(content_type)[1].get(b"boundary")
    if not boundary:
        raise RequestRefused(400, "the multipart request names no boundary in its "
                                  "Content-Type")
    if b"--" + boundary + b"--" not in body:
        raise RequestRefused(400, "the multipart body ends before its closing boundary: it "
                                  "was cut short")
    uploads: list[Upload] = []
    fields = 0

    def on_file(part: File) -> None:
        if len(uploads) == max_images:
            raise RequestRefused(400, f"more than {max_images} images in one request, more "
                                      "than the server's queue holds; send fewer at a time")
        part.file_object.seek(0)
        uploads.append(Upload(_text(part.file_name or part.field_name), part.file_object.read()))

    def on_field(part: Field) -> None:
        nonlocal fields
        fields += 1
        if fields > max_images:
            raise RequestRefused(400, f"more than {max_images} form fields in one request")

    parser = create_form_parser({"Content-Type": content_type.encode("latin-1")}, on_field,
                                on_file, config={"MAX_MEMORY_FILE_SIZE": len(body) + 1})
    try:
        parser.write(body)
        parser.finalize()
    except FormParserError as exc:
        reason = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise RequestRefused(400, f"the multipart body is malformed ({reason})") from None
    if not uploads:
        raise RequestRefused(400, "the multipart request has no file parts: send each image "
                                  "as a file part (curl -F 'image=@photo.jpg')")
    return uploads


def _text(name: bytes | None) -> str:
    """A part's name as text; bytes that are not UTF-8 as ``\\udcXX`` escapes, as the
    results files write names that are not UTF-8."""
    return (name or b"").decode("utf-8", "surrogateescape")
