"""One ``irv2 predict`` run: inputs -> classifier -> records written, with progress and resume."""

from __future__ import annotations

import itertools
import sys
import time
from collections.abc import Iterator
from concurrent.futures import Future
from dataclasses import dataclass, field
from pathlib import Path

from rich.console import Console
from rich.text import Text

from ..cli.render import TableWriter, download_progress, run_progress, stderr_console
from ..cli.signals import exit_status
from ..engines.base import Engine
from ..inputs.decoding import DecodeLimits, DecodePool, default_workers
from ..inputs.images import Preprocessing
from ..inputs.paths import InputSelection, iter_image_paths, path_key
from ..results.files import open_results, output_format
from ..results.records import Record
from ..results.writers import WRITERS, Output, StdoutStream, shown
from ..spec import SPEC
from .batches import decoded_batches
from .classifier import Classifier

EXIT_OK, EXIT_FAILED_INPUTS = 0, 1


@dataclass
class PredictRun:
    """Everything ``irv2 predict`` was asked to do; ``execute`` does it."""

    inputs: tuple[str, ...]
    top_k: int = 5
    weights: Path | None = None
    fmt: str | None = "table"
    output: Path | None = None
    resume: bool = False
    overwrite: bool = False
    recursive: bool = True
    globs: tuple[str, ...] = ()
    include_hidden: bool = False
    batch_size: int = 8
    workers: int | None = None
    quiet: bool = False
    resize: str = SPEC.default_resize
    interpolation: str = SPEC.default_interpolation
    max_pixels: int | None = None
    backend: str = "auto"
    decode_limits: DecodeLimits = field(default_factory=DecodeLimits)
    verbose: bool = False
    engine: Future | None = None  # an engine already loading (see preload)
    decoders: DecodePool | None = None  # decoding workers already starting (caller closes)

    def _todo(self, output: Output) -> Iterator[str]:
        """The input paths not yet in ``output``, never the output file itself."""
        excluded = frozenset([output.identity] if output.identity else [])
        selection = InputSelection(self.recursive, tuple(self.globs), self.include_hidden,
                                   excluded)
        return (p for p in iter_image_paths(self.inputs, selection)
                if path_key(p) not in output.done)

    def _open_output(self) -> Output:
        if self.output is None:
            if self.fmt == "table":
                return Output(TableWriter(Console(file=sys.stdout, markup=False)))
            return Output(WRITERS[self.fmt](StdoutStream()))
        fmt = output_format(self.output, self.fmt)
        return open_results(self.output, fmt, resume=self.resume, overwrite=self.overwrite,
                            top_k=self.top_k)

    def _engine(self, console: Console) -> Engine:
        if self.engine is not None:
            return self.engine.result()
        from ..engines.base import load_engine
        from ..store.weights import ensure_weights

        def notify(message: str) -> None:
            if not self.quiet:
                console.print(message, style="dim")

        weights = self.weights
        if weights is None:
            with download_progress(console, "official weights") as progress:
                weights = ensure_weights(progress=None if self.quiet else progress,
                                         notify=notify)
        return load_engine(weights, self.backend, notify)

    def _preprocessing(self) -> Preprocessing:
        return Preprocessing(self.resize, self.interpolation, self.max_pixels)

    def _classifier(self, console: Console) -> Classifier:
        return Classifier(self._engine(console), self.top_k, self.resize, self.interpolation,
                          self.max_pixels, self.batch_size, self.workers, self.decode_limits)

    def execute(self) -> int:
        """Run to the end (or Ctrl-C); return the exit status."""
        console = stderr_console()
        classified = failed = skipped = failed_before = 0
        started = time.perf_counter()
        interrupted: KeyboardInterrupt | None = None
        decoders, owned = self.decoders, None
        try:  # the output is closed (a JSON array gets its "]") before Ctrl-C is handled
            with self._open_output() as output:
                skipped, failed_before = len(output.done), output.failed
                todo = self._todo(output)
                first = next(todo, None)
                show_progress = console.is_terminal and not self.quiet
                total = sum(1 for _ in self._todo(output)) if show_progress else None
                if first is not None:
                    if decoders is None:
                        decoders = owned = DecodePool(self.workers or default_workers(),
                                                      self.decode_limits)
                    batches = decoded_batches(itertools.chain([first], todo), decoders,
                                              self._preprocessing(), self.batch_size)
                    decoded = next(batches)  # decoded while the engine is still loading
                    classifier = self._classifier(console)
                    started = time.perf_counter()
                    with run_progress(console, show_progress) as progress:
                        task = progress.add_task("", total=total, rate=0.0, failed=0)
                        for record in classifier.classify_batches(
                                itertools.chain([decoded], batches)):
                            output.writer.write(record)
                            classified += record.error is None
                            failed += record.error is not None
                            self._report(progress.console, record)
                            rate = (classified + failed) / (time.perf_counter() - started)
                            progress.update(task, advance=1, rate=rate, failed=failed)
        except KeyboardInterrupt as exc:  # Ctrl-C, or SIGTERM/SIGHUP (see signals.py)
            interrupted = exc
        finally:
            if owned is not None:
                owned.close()
        self._summarize(console, classified, failed, skipped, failed_before,
                        time.perf_counter() - started, interrupted is not None)
        if interrupted is not None:
            return exit_status(interrupted)
        # A resumed file's old error records count too: the exit status is the file's.
        return EXIT_FAILED_INPUTS if failed or failed_before else EXIT_OK

    def _report(self, console: Console, record: Record) -> None:
        """A failed record's error, and with --verbose its decoder's warnings."""
        if record.error is not None:
            console.print(Text(f"error: {shown(record.error)}", style="red"))
        if self.verbose:
            for warning in record.warnings:
                console.print(Text(f"warning: {shown(record.path)}: {shown(warning)}",
                                   style="yellow"))

    def _summarize(self, console: Console, classified: int, failed: int, skipped: int,
                   failed_before: int, elapsed: float, interrupted: bool) -> None:
        if interrupted:
            where = f" in {shown(self.output)}" if self.output else ""
            console.print(f"Interrupted: {classified + failed} results were written{where}. "
                          "Run the same command with --resume to finish.", style="yellow")
        if self.quiet:
            return
        rate = (classified + failed) / elapsed if elapsed > 0 else 0.0
        line = (f"{classified} classified, {failed} failed in {elapsed:.1f} s "
                f"({rate:.2f} img/s)")
        if skipped:
            line += f"; {skipped} already in {shown(self.output)}"
            if failed_before:
                line += f" ({failed_before} of them failed)"
        console.print(line, style="dim")
