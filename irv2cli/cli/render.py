"""Rich rendering for the terminal: top-k tables, download and run progress."""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from rich.console import Console
from rich.progress import (
    BarColumn,
    DownloadColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeRemainingColumn,
    TransferSpeedColumn,
)
from rich.progress_bar import ProgressBar
from rich.table import Table
from rich.text import Text

from ..results.records import Record
from ..results.writers import RecordWriter, shown, write_error


def stderr_console() -> Console:
    """Progress, errors and summaries go here, so stdout stays clean for results. Nothing
    printed is read as markup: a file named ``[bold]a.jpg`` shows as it is named."""
    return Console(stderr=True, soft_wrap=True, markup=False)


def status_printer(console: Console, quiet: bool = False) -> Callable[[str], None]:
    """A library ``notify``: each status message as a dim line on ``console`` (never read
    as markup), or nothing when ``quiet``."""
    def notify(message: str) -> None:
        if not quiet:
            console.print(Text(message, style="dim"))
    return notify


def stdout_is_terminal() -> bool:
    """Whether stdout really is a terminal, not a pipe or a file (rich's ``is_terminal``
    also says yes when ``FORCE_COLOR`` is set)."""
    try:
        return sys.stdout.isatty()
    except (AttributeError, ValueError):
        return False


def print_predictions(console: Console, record: Record) -> None:
    """One image's top-k on ``console``: its name on a line of its own, never wrapped
    (however narrow the terminal, it stays one piece of text to search for), then its
    ``prediction_table``."""
    console.print(Text(shown(record.path), style="italic"), soft_wrap=True)
    console.print(prediction_table(record))


def prediction_table(record: Record) -> Table:
    """One image's top-k as a table: rank, label, WordNet ID (with a head, the head's
    tag), probability with a bar. Labels are text, never markup (a head's class names are
    the user's folder names)."""
    from ..results.heads import TAG_PREFIX

    table = Table()
    table.add_column("#", justify="right")
    table.add_column("label")
    head = bool(record.predictions) and record.predictions[0].wnid.startswith(TAG_PREFIX)
    table.add_column("head" if head else "WordNet ID")
    table.add_column("probability", justify="right")
    table.add_column("")
    for p in record.predictions:
        table.add_row(str(p.rank), Text(shown(p.label)), p.wnid, f"{p.score:.2%}",
                      ProgressBar(total=1.0, completed=p.score, width=20))
    return table


@contextmanager
def download_progress(console: Console, description: str) -> Iterator:
    """A ``weights.Progress`` callback drawing size, speed and ETA on ``console``; the bar
    appears only once bytes arrive, so nothing shows when the file is already cached."""
    progress = Progress(TextColumn("{task.description}"), BarColumn(), DownloadColumn(),
                        TransferSpeedColumn(), TimeRemainingColumn(), console=console)
    tasks = []

    def update(done: int, total: int | None) -> None:
        if not tasks:
            progress.start()
            tasks.append(progress.add_task(description, total=total))
        progress.update(tasks[0], completed=done, total=total)

    try:
        yield update
    finally:
        if tasks:  # stopping a progress that never started still prints an empty line
            progress.stop()


def run_progress(console: Console, enabled: bool, heading: str = "classifying") -> Progress:
    """Images done/total, img/s, ETA and failures so far (task fields ``rate``, ``failed``).

    While it is live in a terminal, what is written to ``sys.stderr`` and ``sys.stdout``
    (``TableWriter``) goes through ``console``, above the bar; stdout only when it is a
    terminal too: piped, it gets the results and never a frame.
    """
    return Progress(
        TextColumn(heading), BarColumn(), MofNCompleteColumn(),
        TextColumn("{task.fields[rate]:.2f} img/s"), TimeRemainingColumn(),
        TextColumn("[red]{task.fields[failed]} failed"),
        console=console, disable=not enabled, redirect_stdout=stdout_is_terminal(),
    )


class TableWriter(RecordWriter):
    """Top-k tables for stdout; records without predictions (errors) print nothing here.

    Each table is rendered by ``console`` (default: one for stdout, without markup), then
    written to ``sys.stdout`` as it is at that moment: stdout itself, or while the run's
    bar is live in a terminal, rich's proxy, which prints it above the bar (see
    ``run_progress``). A console never writes through that proxy itself.
    """

    def __init__(self, console: Console | None = None):
        super().__init__(sys.stdout)
        self.console = console or Console(markup=False)

    def write(self, record: Record) -> None:
        if not record.predictions:
            return
        try:
            with self.console.capture() as table:
                print_predictions(self.console, record)
            sys.stdout.write(table.get())
            sys.stdout.flush()
        except BrokenPipeError:  # the reader is gone: click exits quietly
            raise
        except OSError as exc:  # a full device, say
            raise write_error("stdout", exc) from None
