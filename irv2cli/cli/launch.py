"""Start a run's slow parts first: the decoding workers start and the engine loads while
the rest of the program is still being imported (see ``pipeline.preload``)."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterator
from pathlib import Path

import click


def start_engine(weights: Path | None, backend: str, precision: str, *, resume: bool,
                 quiet: bool):
    """The engine for ``weights`` (default: the official file), loading on a thread, or
    deferred until the run needs it: when resuming (there may be nothing left to do) or
    when the official file must first be downloaded (its bar needs the terminal)."""
    from ..pipeline.preload import Deferred, start_loading

    engine = None if resume else start_loading(weights, backend, quiet, precision)
    if engine is None:
        engine = Deferred(lambda: _download_then_load(weights, backend, precision, quiet))
    return engine


def _download_then_load(weights: Path | None, backend: str, precision: str, quiet: bool):
    from ..engines.base import load_engine
    from .official import official_weights
    from .render import stderr_console

    console = stderr_console()

    def notify(message: str) -> None:
        if not quiet:
            console.print(message, style="dim")

    if weights is None:
        weights = official_weights(console, quiet)
    return load_engine(weights, backend, notify, precision)


def start_decoders(inputs: tuple[str, ...], workers: int | None, memory: int, timeout: float,
                   *, resume: bool):
    """Decoding workers, starting now, or ``None`` when resuming (the run starts its own
    if anything is left). One photo starts one worker: a list of plain files needs no
    more workers than files, which costs the first answer least."""
    if resume:
        return None
    from ..inputs.decoding import DecodeLimits, DecodePool, default_workers
    from ..inputs.uris import is_uri

    count = workers or default_workers()
    if not any(is_uri(path) or os.path.isdir(path) for path in inputs):  # a URI may be a folder
        count = min(count, len(inputs))
    return DecodePool(count, DecodeLimits(memory, timeout))


@contextlib.contextmanager
def open_html_report(report: Path | None, inputs: tuple[str, ...], output: Path | None, *,
                     overwrite: bool) -> Iterator:
    """The run's HTML report, put in place when the block ends (``None`` when there is
    none): an existing file is refused now, before anything runs, unless ``overwrite``."""
    if report is None:
        yield None
        return
    from ..results.report import open_report

    shown = ", ".join(inputs[:3]) + (f" and {len(inputs) - 3} more" if len(inputs) > 3 else "")
    source = f"irv2 predict {shown}" + (f" -> {output}" if output is not None else "")
    with open_report(report, overwrite=overwrite, source=source) as html:
        yield html


def launch(inputs: tuple[str, ...], output: Path | str | None, stdout_sink: Callable | None,
           *, doing: str, done: str, quiet: bool, verbose: bool, resume: bool,
           weights: Path | None, backend: str, precision: str, workers: int | None,
           decode_memory: int, decode_timeout: float, engine: str = "local",
           ray_address: str | None = None, actors: int | None = None,
           ray_node_ip: str | None = None, report: Path | None = None, **fields) -> int:
    """Run a command over ``inputs`` into ``output`` (else ``stdout_sink()``), and an HTML
    ``report`` if asked: start the engine and the workers, then import the rest and run;
    return the exit status. ``doing``/``done`` name the work on the bar and in the
    summary ("classified"). ``engine="ray"`` runs on a Ray cluster instead (see
    ``on_ray``; ``output`` may then be a folder of shards). ``fields`` are the other
    flags of ``options.run_options`` and ``RunOptions`` fields."""
    if precision == "int8" and backend == "keras":
        raise click.UsageError("--precision int8 runs on the onnx backend; the keras "
                               "backend computes in fp32 only.")
    if engine == "ray":
        from .on_ray import launch_on_ray

        return launch_on_ray(inputs, output, stdout_sink, doing=doing, done=done,
                             quiet=quiet, verbose=verbose, ray_address=ray_address,
                             actors=actors, ray_node_ip=ray_node_ip, resume=resume,
                             weights=weights, backend=backend, precision=precision,
                             workers=workers, decode_memory=decode_memory,
                             decode_timeout=decode_timeout, **fields)
    with open_html_report(report, inputs, output,
                          # a resumed run replaces the report of the run it finishes
                          overwrite=fields.get("overwrite", False) or resume) as html:
        # The workers first: their interpreters start on the other core while the engine
        # imports, and the rest of this program's imports wait for the engine's (each
        # would slow the other, taking turns for the GIL) and go on while ONNX Runtime
        # creates its session, GIL free.
        decoders = start_decoders(inputs, workers, decode_memory, decode_timeout,
                                  resume=resume)
        try:
            loading = start_engine(weights, backend, precision, resume=resume, quiet=quiet)
            from ..pipeline.preload import EngineLoading

            if isinstance(loading, EngineLoading):
                loading.imported.wait()
            from .render import stderr_console
            from .runs import execute, options_from_flags

            options = options_from_flags(resume=resume, weights=weights, backend=backend,
                                         precision=precision, workers=workers,
                                         decode_memory=decode_memory,
                                         decode_timeout=decode_timeout,
                                         pixels=html is not None, **fields)
            sink = output if output is not None else stdout_sink()
            # an engine still loading is left behind: the program ends without the
            # teardown that ONNX Runtime, creating its session, could abort (cli.main)
            return execute(inputs, sink, options, engine=loading, decoders=decoders,
                           console=stderr_console(), doing=doing, done=done, quiet=quiet,
                           verbose=verbose, report=html)
        finally:
            if decoders is not None:
                decoders.close()
