"""The command-line side of a run: the live bar, error lines, the summary, the exit status.

``predict`` and ``embed`` reach ``execute`` through ``launch``; the run itself is
``pipeline.run``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING

from rich.console import Console
from rich.text import Text

from ..pipeline.job import Runner
from ..pipeline.run import RunInterrupted, RunProgress, RunSummary, run
from ..results.records import Record
from ..results.writers import Output, shown
from .render import run_progress, stderr_console
from .signals import exit_status

if TYPE_CHECKING:
    from ..results.report import HtmlReport
    from .plan import RunPlan

EXIT_OK, EXIT_FAILED_INPUTS = 0, 1


class RunDisplay:
    """Draws one run on ``console``: the bar (started with the first record, so it never
    competes with a download's bar), each failure, and with ``verbose`` each warning."""

    def __init__(self, console: Console, *, doing: str, bar: bool, verbose: bool):
        self.verbose = verbose
        self.progress = run_progress(console, enabled=bar, heading=doing)
        self.task = None

    def record(self, record: Record) -> None:
        """A failed record's error, and with ``verbose`` its decoder's warnings."""
        console = self.progress.console
        if record.error is not None:
            console.print(Text(f"error: {shown(record.error)}", style="red"))
        if self.verbose:
            for warning in record.warnings:
                console.print(Text(f"warning: {shown(record.path)}: {shown(warning)}",
                                   style="yellow"))

    def say(self, message: str) -> None:
        """A status message of the run (a plan, a stall), above the bar."""
        self.progress.console.print(Text(message, style="dim"))

    def advance(self, progress: RunProgress) -> None:
        """Move the bar (starting it the first time)."""
        if self.task is None:
            self.progress.start()
            self.task = self.progress.add_task("", total=progress.total, rate=0.0, failed=0)
        rate = progress.done / progress.elapsed if progress.elapsed > 0 else 0.0
        self.progress.update(self.task, completed=progress.done, rate=rate,
                             failed=progress.failed)

    def stop(self) -> None:
        if self.task is not None:
            self.progress.stop()
            self.task = None


def execute(plan: RunPlan, runner: Runner, report: HtmlReport | None = None) -> int:
    """Run ``plan`` on ``runner``, drawing progress on stderr (on Ray with ``verbose``,
    Ray Data draws its own) and each record into ``report`` if given (finished with the
    summary, also when interrupted); say what was done, how to finish an interrupted
    run, and return the exit status: 0 all done, 1 some input failed (now or in the
    resumed file), 128 + signal when interrupted."""
    console = stderr_console()
    bar = (console.is_terminal and not plan.quiet
           and not (plan.runner is not None and plan.verbose))
    display = RunDisplay(console, doing=plan.doing, bar=bar, verbose=plan.verbose)
    on_record, options = display.record, plan.options
    if report is not None:
        on_record = _both(display.record, report.write)
        options = dataclasses.replace(options, excluded=options.excluded | report.identities)
    sink = plan.output if plan.output is not None else stdout_output(plan.stdout_format)
    try:
        summary = run(plan.inputs, sink, options, runner=runner,
                      notify=_ignore if plan.quiet else display.say, on_record=on_record,
                      on_progress=display.advance if bar else None)
    except RunInterrupted as interrupt:
        display.stop()  # before the last words, which go below the bar
        finish_report(report, interrupt.summary, interrupted=True)
        summarize(console, plan, interrupt.summary, interrupted=True, notes=engine_notes(runner))
        return exit_status(interrupt.__cause__ or interrupt)
    finally:
        display.stop()
    finish_report(report, summary)
    summarize(console, plan, summary, notes=engine_notes(runner))
    return EXIT_FAILED_INPUTS if summary.any_failed else EXIT_OK


def _ignore(message: str) -> None:
    pass


def stdout_output(fmt: str) -> Output:
    """Tables (rich, in a terminal above the live bar) or records streamed to stdout."""
    from ..results.writers import WRITERS, StdoutStream
    from .render import TableWriter

    if fmt == "table":
        return Output(TableWriter())
    return Output(WRITERS[fmt](StdoutStream()))


def _both(first: Callable[[Record], None], second: Callable[[Record], None]
          ) -> Callable[[Record], None]:
    """A record callback that calls ``first``, then ``second``."""
    def both(record: Record) -> None:
        first(record)
        second(record)
    return both


def finish_report(report: HtmlReport | None, summary: RunSummary,
                  interrupted: bool = False) -> None:
    """End ``report`` with the run's elapsed time, and notes on what it does not show."""
    if report is None:
        return
    notes = []
    if interrupted:
        notes.append("The run was interrupted: this report shows the images done until then"
                     + ("; run the same command with --resume to finish it."
                        if summary.output else "."))
    if summary.skipped:
        notes.append(f"{summary.skipped} images already in {summary.output} are not shown: "
                     f"irv2 report {summary.output} shows the whole file.")
    report.finish(summary.elapsed, notes)


def engine_notes(runner: Runner) -> list[str]:
    """What the summary says about the engine the run loaded: how the int8 runtime was
    calibrated and how it measured against fp32 (nothing for fp32, or if none loaded)."""
    report = getattr(getattr(runner, "loaded", None), "report", None)
    if report is None:
        return []
    from .quantize import report_lines

    return report_lines(report)


def summarize(console: Console, plan: RunPlan, summary: RunSummary,
              interrupted: bool = False, notes: Iterable[str] = ()) -> None:
    """The run's last words on stderr: how to finish it if interrupted; unless the plan
    is quiet, counts and speed, then ``notes`` (on the engine)."""
    written = summary.classified + summary.failed
    if interrupted and summary.output is None:
        console.print(f"Interrupted: {written} results were written.", style="yellow")
    elif interrupted and not written and plan.options.overwrite:
        console.print(f"Interrupted before the first result: {shown(summary.output)} is as "
                      "it was (--overwrite replaces it only once a result is ready).",
                      style="yellow")
    elif interrupted:
        console.print(f"Interrupted: {written} results were written in "
                      f"{shown(summary.output)}. Run the same command with --resume to finish.",
                      style="yellow")
    if plan.quiet:
        return
    rate = written / summary.elapsed if summary.elapsed > 0 else 0.0
    line = (f"{summary.classified} {plan.done}, {summary.failed} failed in {summary.elapsed:.1f} s "
            f"({rate:.2f} img/s)")
    if summary.skipped:
        line += f"; {summary.skipped} already in {shown(summary.output)}"
        if summary.failed_before:
            line += f" ({summary.failed_before} of them failed)"
    console.print(line, style="dim")
    for note in notes:
        console.print(Text(note, style="dim"))
