"""``irv2 serve``: the network loaded once, answering images over HTTP.

An ASGI application (Starlette) that any ASGI server can run or mount::

    from irv2cli.serve import ServeOptions, create_app
    app = create_app(ServeOptions(precision="int8"))

``irv2 serve`` runs it under uvicorn (``server.serve``). Uploads are decoded in the
isolated worker processes of ``inputs.decoding``; concurrent requests meet in one engine
call (``batcher``); ``metrics`` are Prometheus's. Nothing here is imported by the other
commands: the extra ``irv2cli[serve]`` brings the libraries.
"""

from __future__ import annotations

from .app import create_app
from .options import ServeOptions

__all__ = ["ServeOptions", "create_app"]
