"""Start a run's slow parts first: the decoding workers start and the engine loads while
the rest of the program is still being imported (see ``pipeline.preload``)."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ..engines.base import Engine
    from ..inputs.decoding import DecodePool
    from ..pipeline.preload import Deferred, EngineLoading
    from ..results.report import HtmlReport
    from .plan import RunPlan


def launch(plan: RunPlan) -> int:
    """Run ``plan`` and return the exit status: on this machine, the workers start and
    the engine loads before the rest of the program is imported; with a Ray runner, see
    ``on_ray``."""
    if plan.runner is not None:
        from .on_ray import launch_on_ray

        return launch_on_ray(plan)
    with open_html_report(plan) as html:
        # The workers first: their interpreters start on the other core while the engine
        # imports, and the rest of this program's imports wait for the engine's (each
        # would slow the other, taking turns for the GIL) and go on while ONNX Runtime
        # creates its session, GIL free.
        decoders = start_decoders(plan)
        try:
            loading = start_engine(plan)
            from ..pipeline.preload import EngineLoading

            if isinstance(loading, EngineLoading):
                loading.imported.wait()
            from ..pipeline.local import LocalRunner
            from .runs import execute

            # an engine still loading is left behind: the program ends without the
            # teardown that ONNX Runtime, creating its session, could abort (cli.main)
            return execute(plan, LocalRunner(loading, decoders), html)
        finally:
            if decoders is not None:
                decoders.close()


def start_engine(plan: RunPlan) -> EngineLoading | Deferred:
    """The engine for the plan's weights (default: the official file), loading on a
    thread, or deferred until the run needs it: when resuming (there may be nothing left
    to do) or when the official file must first be downloaded (its bar needs the
    terminal)."""
    from ..pipeline.preload import Deferred, start_loading

    options = plan.options
    engine = None if options.resume else start_loading(options.weights, options.backend,
                                                       plan.quiet, options.precision)
    if engine is None:
        engine = Deferred(lambda: _download_then_load(plan))
    return engine


def _download_then_load(plan: RunPlan) -> Engine:
    from ..engines.base import load_engine
    from .official import official_weights
    from .render import status_printer, stderr_console

    console = stderr_console()
    notify = status_printer(console, plan.quiet)
    options = plan.options
    weights = options.weights or official_weights(console, plan.quiet)
    return load_engine(weights, options.backend, notify, options.precision)


def start_decoders(plan: RunPlan) -> DecodePool | None:
    """Decoding workers, starting now, or ``None`` when resuming (the run starts its own
    if anything is left). One photo starts one worker: a list of plain files needs no
    more workers than files, which costs the first answer least."""
    if plan.options.resume:
        return None
    from ..inputs.decoding import DecodePool, default_workers
    from ..inputs.uris import is_uri

    count = plan.options.workers or default_workers()
    # a URI may be a folder
    if not any(is_uri(path) or os.path.isdir(path) for path in plan.inputs):
        count = min(count, len(plan.inputs))
    return DecodePool(count, plan.options.decode_limits)


@contextlib.contextmanager
def open_html_report(plan: RunPlan) -> Iterator[HtmlReport | None]:
    """The run's HTML report, put in place when the block ends (``None`` when there is
    none): an existing file is refused now, before anything runs, unless overwriting or
    resuming (a resumed run replaces the report of the run it finishes)."""
    if plan.report is None:
        yield None
        return
    from ..results.report import open_report

    inputs = plan.inputs
    shown = ", ".join(inputs[:3]) + (f" and {len(inputs) - 3} more" if len(inputs) > 3 else "")
    source = f"irv2 predict {shown}" + (f" -> {plan.output}" if plan.output is not None else "")
    overwrite = plan.options.overwrite or plan.options.resume
    with open_report(plan.report, overwrite=overwrite, source=source) as html:
        yield html
