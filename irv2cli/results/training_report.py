"""The HTML page of a head's validation (``irv2 train --report``): the run report's kind of
page (``results.report``: self-contained, CSP-protected, every text escaped), holding
the summary, per-class precision/recall/F1, the confusion matrix, and a card for each
misclassified validation image (its thumbnail, the head's top-k, its true class), and
for each file that could not be read. Those images are the ones to look at: they are
often mislabelled."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .records import Record
from .report import escaped, open_report

MATRIX_LIMIT = 40  # classes beyond which the matrix gives way to the most confused pairs
PAIRS = 20


@dataclass(frozen=True)
class ClassRow:
    """One class's line of the per-class table."""

    name: str
    precision: float
    recall: float
    f1: float
    train: int
    val: int


def confused_pairs(confusion: np.ndarray, limit: int = PAIRS) -> list[tuple[int, int, int]]:
    """The (true, predicted, count) off the diagonal, most first (then by class order)."""
    off = confusion.copy()
    np.fill_diagonal(off, 0)
    true, predicted = np.nonzero(off)
    counts = off[true, predicted]
    order = np.lexsort((predicted, true, -counts))[:limit]
    return [(int(true[i]), int(predicted[i]), int(counts[i])) for i in order]


def matrix_html(classes: Sequence[str], confusion: np.ndarray) -> str:
    """The confusion matrix as a table (rows: true class; columns: predicted), or for
    more than ``MATRIX_LIMIT`` classes the most confused pairs."""
    if len(classes) > MATRIX_LIMIT:
        rows = "".join(f'<tr><td class="name">{escaped(classes[t])}</td>'
                       f'<td class="name">{escaped(classes[p])}</td><td>{n}</td></tr>'
                       for t, p, n in confused_pairs(confusion))
        return (f"<h2>Most confused ({len(classes)} classes: too many for the whole "
                "matrix)</h2><table><tr><th>true</th><th>predicted</th><th>images</th></tr>"
                f"{rows}</table>")
    head = "".join(f"<th>{escaped(name)}</th>" for name in classes)
    body = "".join(
        f'<tr><th class="name">{escaped(name)}</th>'
        + "".join(f'<td{" class=hit" if i == j else ""}>{confusion[i, j]}</td>'
                  for j in range(len(classes))) + "</tr>"
        for i, name in enumerate(classes))
    return ("<h2>Confusion matrix (rows: true class, columns: predicted)</h2>"
            f'<table><tr><th class="name">true \\ predicted</th>{head}</tr>{body}</table>')


def classes_html(rows: Iterable[ClassRow]) -> str:
    body = "".join(f'<tr><td class="name">{escaped(r.name)}</td><td>{r.precision:.3f}</td>'
                   f"<td>{r.recall:.3f}</td><td>{r.f1:.3f}</td><td>{r.train}</td>"
                   f"<td>{r.val}</td></tr>" for r in rows)
    return ("<h2>Per class (validation)</h2><table><tr><th class=name>class</th>"
            "<th>precision</th><th>recall</th><th>F1</th><th>train images</th>"
            f"<th>val images</th></tr>{body}</table>")


def write_training_report(path: Path, *, source: str, figures: dict[str, object],
                          rows: Sequence[ClassRow], confusion: np.ndarray,
                          cards: Iterable[tuple[Record, str | None]],
                          notes: Iterable[str] = (), overwrite: bool = False) -> None:
    """Write the page to ``path`` whole (staged, then renamed): ``figures`` head the
    summary; ``rows`` and ``confusion`` follow; ``cards`` are (record, note) for each
    misclassified image (its ``pixels`` and top-k, the note naming its true class) and
    each failed file."""
    with open_report(path, overwrite=overwrite, title="irv2 train: validation",
                     source=source) as report:
        for record, note in cards:
            report.write(record, note)
        sections = matrix_html([r.name for r in rows], confusion) + classes_html(rows)
        report.finish(notes=notes, figures=figures, sections=sections)
