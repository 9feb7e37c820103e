"""``irv2 train``: a head of your own classes from folders of images, with its validation."""

from __future__ import annotations

from pathlib import Path

import click
from rich.console import Console
from rich.table import Table
from rich.text import Text

from ..spec import BACKENDS, PRECISIONS
from .options import (
    check_precision_backend,
    decode_options,
    examples,
    preprocessing_options,
    runner_options,
    weights_option,
)

MATRIX_COLUMNS = 12  # classes beyond which the terminal shows the most confused pairs


@click.command(epilog=examples(
    "irv2 train fruit/ -o ripeness.head",
    "irv2 train products/ -o products.head --report validation.html",
    "irv2 train products/ -o products.head --overwrite --precision int8"))
@click.argument("data", type=click.Path(file_okay=False, path_type=Path))
@click.option("-o", "--output", required=True, type=click.Path(dir_okay=False, path_type=Path),
              help="The head file to write (e.g. products.head).")
@click.option("--val-split", type=click.FloatRange(0, 1, min_open=True, max_open=True),
              default=0.2, show_default=True,
              help="Without a val/ folder: the fraction of each class kept to validate.")
@click.option("--seed", type=int, default=0, show_default=True,
              help="Seeds the validation split and the cross-validation folds.")
@click.option("--balance/--no-balance", default=True, show_default=True,
              help="Weight each class inversely to its image count, so a small class "
                   "counts as much as a large one.")
@click.option("--report", type=click.Path(dir_okay=False, path_type=Path),
              help="Also write an HTML page: the confusion matrix and the misclassified "
                   "validation images with their true and predicted classes.")
@click.option("--overwrite", is_flag=True, help="Replace an existing head (and report).")
@click.option("--glob", "globs", multiple=True, metavar="PATTERN",
              help="Only files of the class folders matching this pattern, e.g. '*.jpg' "
                   "(repeatable).")
@click.option("--include-hidden", is_flag=True, help="Include hidden files and folders.")
@click.option("--batch-size", type=click.IntRange(1, 1024), default=8, show_default=True,
              help="Images per inference call.")
@decode_options("images ahead of inference", "is left out, with its error")
@click.option("-q", "--quiet", is_flag=True, help="No progress bar on stderr.")
@click.option("-v", "--verbose", is_flag=True,
              help="Also print what image decoders warned about.")
@click.option("--backend", type=click.Choice(BACKENDS), default="auto", show_default=True,
              envvar="IRV2_BACKEND", help="As for predict. Env: IRV2_BACKEND.")
@click.option("--precision", type=click.Choice(PRECISIONS), default="fp32",
              show_default=True, envvar="IRV2_PRECISION",
              help="The features' precision, as for predict. Env: IRV2_PRECISION.")
@weights_option
@preprocessing_options
@runner_options
def train(**flags):
    """Train a head of your own classes on the network's features.

    DATA holds one subfolder of images per class (the class names are the folder
    names), or train/ and val/ each holding the same class subfolders. Features come
    from the same run as `irv2 embed` and are cached by each file's content, so a
    second run embeds only new or changed images. The head (multinomial logistic
    regression, its L2 strength chosen on the validation images) is written to
    --output; `irv2 predict --head` and `irv2 export --head` use it. Prints the
    validation: top-1 (top-5 above 5 classes), per-class precision, recall and F1,
    and the confusion matrix. Exit status: 0 every image used, 1 some files could not
    be read (left out; the head is written), 2 usage error.
    """
    from .plan import options_from, runner_from
    from .predict import same_file

    check_precision_backend(flags["precision"], flags["backend"])
    report = flags["report"]
    if report is not None and same_file(report, flags["output"]):
        raise click.UsageError("--report and --output name the same file; give each its own.")
    from ..training.train import TrainOptions

    options = TrainOptions(flags["val_split"], flags["seed"], flags["balance"],
                           flags["overwrite"], options_from(flags))
    if report is not None:
        from ..results.report import check_report_path

        check_report_path(report, flags["overwrite"])
    click.get_current_context().exit(
        run_training(flags["data"], flags["output"], options, runner_from(flags), report,
                     quiet=flags["quiet"], verbose=flags["verbose"]))


def run_training(data: Path, output: Path, options, runner, report: Path | None, *,
                 quiet: bool, verbose: bool) -> int:
    """Train, drawing the embedding's bar and errors on stderr and the validation on
    stdout; return the exit status."""
    from ..pipeline.run import RunInterrupted
    from ..results.writers import shown
    from ..training.train import train
    from .render import stderr_console
    from .runs import RunDisplay
    from .signals import exit_status

    console = stderr_console()
    bar = console.is_terminal and not quiet
    display = RunDisplay(console, doing="embedding", bar=bar, verbose=verbose)
    stage = ["finding"]

    def on_stage(name: str) -> None:
        stage[0] = name
        if name == "fitting":
            display.stop()
            if not quiet:
                console.print("fitting the head...", style="dim")

    try:
        trained = train(data, output, options, runner=runner,
                        notify=(lambda message: None) if quiet else display.say,
                        on_record=display.record,
                        on_progress=display.advance if bar else None, on_stage=on_stage)
    except RunInterrupted as interrupt:
        display.stop()
        done = getattr(interrupt, "cached", interrupt.summary.classified)
        console.print(f"Interrupted while embedding: the features of {done} more images "
                      "were cached, so the same command goes on from there. No head was "
                      "written.", style="yellow")
        return exit_status(interrupt.__cause__ or interrupt)
    except KeyboardInterrupt as interrupt:
        display.stop()
        cached = " (the features are cached: the same command starts again from the fit)" \
            if stage[0] in ("fitting", "writing") else ""
        console.print(f"Interrupted while {stage[0]}: no head was written{cached}.",
                      style="yellow")
        return exit_status(interrupt)
    finally:
        display.stop()
    show_validation(Console(highlight=False), trained)
    if report is not None:
        write_report(report, trained, options)
    if not quiet:
        console.print(Text(f"head written to {shown(output)}: {len(trained.head.classes)} "
                           f"classes, trained on {trained.train_count} images", style="dim"))
    return 1 if trained.failed else 0


def _percent(value: float) -> str:
    return f"{value:.1%}"


def show_validation(out: Console, trained) -> None:
    """What the head does on the validation images: accuracy, per class, the matrix."""
    from ..results.training_report import confused_pairs
    from ..results.writers import shown

    evaluation, fit, names = trained.evaluation, trained.fit, trained.head.classes
    counts = (f"{trained.embedded} embedded, {trained.cached} from the cache, "
              f"{len(trained.failed)} could not be read (left out)")
    out.print(Text(f"images: {counts}"))
    out.print(Text(f"head: C={fit.c:g} chosen by {fit.chosen_by}, fitted in "
                   f"{fit.seconds:.1f} s" + ("" if fit.converged else
                                              " (L-BFGS did not fully converge)")))
    line = (f"validation ({int(evaluation.support.sum())} images): top-1 "
            f"{_percent(evaluation.top1)}")
    if evaluation.top5 is not None:
        line += f", top-5 {_percent(evaluation.top5)}"
    out.print(Text(line, style="bold"))
    table = Table(title="per class (validation)", title_justify="left")
    for column in ("class", "precision", "recall", "F1", "train", "val"):
        table.add_column(column, justify="left" if column == "class" else "right")
    per_class = trained.head.metadata["training"]["per_class"]
    for i, name in enumerate(names):
        table.add_row(Text(shown(name)), f"{evaluation.precision[i]:.3f}",
                      f"{evaluation.recall[i]:.3f}", f"{evaluation.f1[i]:.3f}",
                      str(per_class[name]["train"]), str(per_class[name]["val"]))
    out.print(table)
    if len(names) <= MATRIX_COLUMNS:
        matrix = Table(title="confusion matrix (rows: true class, columns: predicted)",
                       title_justify="left")
        matrix.add_column("true \\ predicted")
        for name in names:
            matrix.add_column(Text(shown(name)), justify="right")
        for i, name in enumerate(names):
            matrix.add_row(Text(shown(name)), *(Text(str(n), style="bold" if i == j else "")
                                               for j, n in enumerate(evaluation.confusion[i])))
        out.print(matrix)
        return
    pairs = confused_pairs(evaluation.confusion, 10)
    out.print(Text(f"{len(names)} classes: too many for the whole confusion matrix here "
                   "(--report shows more); the most confused:"
                   + ("" if pairs else " none")))
    for true, predicted, count in pairs:
        out.print(Text(f"  {shown(names[true])} -> {shown(names[predicted])}: {count}"))


def write_report(path: Path, trained, options) -> None:
    """The validation page (``results.training_report``): the misclassified validation
    images' thumbnails decoded again by isolated workers."""
    import os

    from ..inputs.decoding import DecodePool, default_workers
    from ..results.labels import decode_top_k
    from ..results.records import Record
    from ..results.report import with_pixels
    from ..results.training_report import ClassRow, write_training_report

    evaluation, head = trained.evaluation, trained.head
    labels, names = head.labels, head.classes
    per_class = head.metadata["training"]["per_class"]
    wrong = [(example, row) for example, row in zip(trained.val, trained.probabilities,
                                                    strict=True)
             if int(row.argmax()) != example.label]
    true_of = {example.path: names[example.label] for example, _ in wrong}
    records = [Record(example.path, decode_top_k(row, min(5, len(names)), labels))
               for example, row in wrong]
    rows = [ClassRow(name, float(evaluation.precision[i]), float(evaluation.recall[i]),
                     float(evaluation.f1[i]), per_class[name]["train"], per_class[name]["val"])
            for i, name in enumerate(names)]
    figures = {"classes": len(names), "train images": trained.train_count,
               "val images": int(evaluation.support.sum()),
               "top-1": _percent(evaluation.top1),
               **({"top-5": _percent(evaluation.top5)} if evaluation.top5 is not None else {}),
               "misclassified": len(wrong), "unreadable": len(trained.failed)}
    notes = [f"C={trained.fit.c:g}, chosen by {trained.fit.chosen_by}; head: "
             f"{os.fspath(trained.output)}"]

    def cards():
        for record, note in with_pixels(records, pool, options.run.preprocessing):
            true = f"true class: {true_of[record.path]}"
            yield record, true if note is None else f"{true}; {note}"
        for record in trained.failed:
            yield record, None

    with DecodePool(min(options.run.workers or default_workers(), max(1, len(records))),
                    options.run.decode_limits) as pool:
        write_training_report(path, source=f"irv2 train {os.fspath(trained.data.root)}",
                              figures=figures, rows=rows, confusion=evaluation.confusion,
                              cards=cards(), notes=notes, overwrite=options.overwrite)
