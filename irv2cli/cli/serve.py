"""``irv2 serve``: the network loaded once, answering images over HTTP."""

from __future__ import annotations

import click

from ..errors import Hint, ServeError
from .options import (
    ByteSize,
    Seconds,
    check_precision_backend,
    decode_options,
    engine_options,
    examples,
    preprocessing_options,
)


@click.command(epilog=examples(
    "irv2 serve",
    "irv2 serve --precision int8 --port 9000",
    "irv2 serve --host 0.0.0.0 --max-batch 16 --access-log"))
@click.option("--host", default="127.0.0.1", show_default=True,
              help="Address to listen on (0.0.0.0: every interface of this machine).")
@click.option("--port", type=click.IntRange(0, 65535), default=8000, show_default=True,
              help="Port to listen on (0: any free port, said on stderr).")
@click.option("-k", "--top-k", type=click.IntRange(1, 1000), default=5, show_default=True,
              help="Classes per image when a request does not say (?top_k=N).")
@click.option("--max-batch", type=click.IntRange(1, 1024), default=8, show_default=True,
              help="Images of concurrent requests run together in one engine call.")
@click.option("--max-delay-ms", type=Seconds(0, 10_000), default=5.0, show_default=True,
              metavar="MS",
              help="Longest an image waits for company, and only while more are on their way.")
@click.option("--concurrent-batches", type=click.IntRange(1, 64), metavar="N",
              help="Engine calls that may run at once.  [default: 2 in int8, 1 in fp32]")
@click.option("--max-queue", type=click.IntRange(1, 1 << 20), default=64, show_default=True,
              help="Images accepted and not yet answered; a request beyond is a 503 with "
                   "Retry-After.")
@click.option("--max-body", type=ByteSize(), default="32MiB", show_default=True,
              help="Largest request body; a larger one is a 413, refused before it is read.")
@click.option("--client-timeout", type=Seconds(0, 3600, low_open=True), default=30.0,
              show_default=True, metavar="SECONDS",
              help="Time a client has to send its request, and to take each write of the "
                   "answer; a slower one is cut off.")
@click.option("--drain-timeout", type=Seconds(1, 3600), default=30.0,
              show_default=True, metavar="SECONDS",
              help="On SIGTERM or Ctrl-C, time requests in flight have to finish.")
@click.option("--access-log", is_flag=True, help="Log every request on stderr (uvicorn's "
              "access log).")
@decode_options("uploads", "is a 422")
@engine_options
@preprocessing_options
def serve(host, port, top_k, max_batch, max_delay_ms, concurrent_batches, max_queue,
          max_body, client_timeout, drain_timeout, access_log, workers, decode_memory,
          decode_timeout, backend, precision, weights, resize, interpolation, max_pixels):
    """Serve the network over HTTP: POST images, get the records predict writes.

    POST /v1/predict and /v1/embed take one image as the body, or several as
    multipart/form-data file parts. GET /health/live, /health/ready (503 until the
    engine is warm, and while draining), the Open Inference Protocol's /v2/health/...
    and /v2/models/irv2, and /metrics (Prometheus). Needs the serve extra:
    pip install 'irv2cli[serve]'. Exit status: 0 after a drain, 1 if it cannot start.

    \b
    Asking it:
      curl --data-binary @cat.jpg 'http://127.0.0.1:8000/v1/predict?top_k=3'
      curl -F a=@cat.jpg -F b=@dog.png http://127.0.0.1:8000/v1/predict
    """
    from ..inputs.decoding import DecodeLimits
    from ..inputs.images import Preprocessing
    from .render import status_printer, stderr_console

    try:
        from ..serve.options import ServeOptions
        from ..serve.server import serve as run_server
    except ImportError as exc:
        raise ServeError(f"irv2 serve needs its extra, which is not installed ({exc.name} "
                         "is missing)", Hint.INSTALL_SERVE) from None
    check_precision_backend(precision, backend)
    options = ServeOptions(
        weights=weights, backend=backend, precision=precision, top_k=top_k,
        preprocessing=Preprocessing(resize, interpolation, max_pixels),
        decode_limits=DecodeLimits(decode_memory, decode_timeout), workers=workers,
        max_batch=max_batch, max_delay=max_delay_ms / 1000,
        concurrent_batches=concurrent_batches, max_queue=max_queue,
        max_body=max_body, client_timeout=client_timeout)
    run_server(options, host, port, drain_timeout=drain_timeout, access_log=access_log,
               notify=status_printer(stderr_console()))
