"""Reading a request's images: one as the raw body, or several as multipart file parts,
within the server's limits on size and time.

``BodyLimits`` is ASGI middleware: a body announced (``Content-Length``) or found larger
than ``max_body`` is a 413 before it is read in full, and a client that takes longer
than ``client_timeout`` to send its request, or to take each write of its answer, is cut
off; neither ever holds a decoder or the engine, which get only whole bodies. A client
that goes away before its request is read is simply forgotten.
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass

from starlette.datastructures import UploadFile
from starlette.requests import ClientDisconnect, Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send


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
    ``upload``). ``RequestRefused`` (400) for an empty body or a form without files."""
    if request.headers.get("content-type", "").startswith("multipart/form-data"):
        return await _parts(request, max_images)
    body = await request.body()
    if not body:
        raise RequestRefused(400, "the request has no body: send one image as the body, or "
                                  "several as multipart/form-data file parts")
    return [Upload(request.query_params.get("name", "upload"), body)]


async def _parts(request: Request, max_images: int) -> list[Upload]:
    async with request.form(max_files=max_images, max_fields=max_images) as form:
        uploads = [Upload(part.filename or field, await part.read())
                   for field, part in form.multi_items() if isinstance(part, UploadFile)]
    if not uploads:
        raise RequestRefused(400, "the multipart request has no file parts: send each image "
                                  "as a file part (curl -F 'image=@photo.jpg')")
    return uploads
