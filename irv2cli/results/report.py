"""An HTML report of a run: one self-contained file, written as the records come.

Each image gets a card (a thumbnail, its top-k labels with score bars); each failure a
card and a row in the list of failed files; the summary ends the file. Nothing is
loaded from the network: thumbnails are ``data:`` JPEGs, the style and the filter
script are inline, and a Content-Security-Policy allows nothing else (the script only
by its hash). Every text, file names included, is escaped; a name that is not UTF-8
shows its bytes as ``\\udcXX``.

Thumbnails are made from a record's ``pixels``: the network input the decoding workers
produced, a plain array by then, so no untrusted file is decoded here. Cards are
written to the stream at once and failures spooled to a temporary file, so memory
stays flat however many images there are.

>>> with open_report(Path("report.html")) as report:
...     for record in records:          # records carrying pixels (RunOptions(pixels=True))
...         report.write(record)
...     report.finish(elapsed=12.5)
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import html
import io
import os
import shutil
import stat
import tempfile
from collections.abc import Iterable, Iterator
from concurrent.futures import Future
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO

from ..errors import Hint, OutputError
from ..inputs.images import Preprocessing
from ..store.atomic import atomic_file
from .files import RECORDS, output_format
from .locked import identity
from .records import Record
from .scanning import Lines
from .writers import ENCODING, shown, write_error

if TYPE_CHECKING:
    import numpy as np

    from ..inputs.decoding import DecodePool, Outcome

THUMBNAIL = 96  # pixels on the longer side, as the card shows it
QUALITY = 70  # JPEG quality of the thumbnails
AHEAD = 16  # files decoded ahead when thumbnails are read again
CENTRE_CROP = Preprocessing()  # what predict feeds the network by default

SCRIPT = """\
"use strict";
(() => {
  const cards = document.querySelectorAll(".card");
  const text = document.getElementById("filter-text");
  const count = document.getElementById("shown");
  function apply() {
    const needle = text.value.trim().toLowerCase();
    const state = document.querySelector("input[name=state]:checked").value;
    let visible = 0;
    for (const card of cards) {
      const show = (state === "all" || card.dataset.state === state)
        && (!needle || card.dataset.text.includes(needle));
      card.hidden = !show;
      visible += show;
    }
    count.textContent = `${visible} of ${cards.length} shown`;
  }
  text.addEventListener("input", apply);
  for (const radio of document.querySelectorAll("input[name=state]")) {
    radio.addEventListener("change", apply);
  }
  apply();
})();
"""
SCRIPT_HASH = base64.b64encode(hashlib.sha256(SCRIPT.encode()).digest()).decode()
POLICY = ("default-src 'none'; img-src data:; style-src 'unsafe-inline'; "
          f"script-src 'sha256-{SCRIPT_HASH}'; base-uri 'none'; form-action 'none'")

STYLE = """\
body{margin:0;font:14px/1.35 system-ui,sans-serif;color:#1d2327;background:#f4f5f7;
display:flex;flex-direction:column}
header{order:-2;padding:12px 20px;background:#fff;border-bottom:1px solid #d8dce0}
h1{font-size:20px;margin:0 0 8px}h2{font-size:16px;margin:0 0 8px}
.filters{display:flex;gap:16px;align-items:center;flex-wrap:wrap}
.filters input[type=search]{width:18em;padding:4px 6px}
#summary{order:-1;padding:8px 20px;background:#fff;border-bottom:1px solid #d8dce0}
#summary dl{display:flex;flex-wrap:wrap;gap:4px 24px;margin:0}
#summary dt{color:#5c6670}#summary dd{margin:0 0 0 6px;font-weight:600}
#summary div{display:flex}.note{margin:6px 0 0;color:#8a4b00}
main{display:grid;grid-template-columns:repeat(auto-fill,minmax(300px,1fr));gap:12px;
padding:16px 20px}
.card{margin:0;background:#fff;border:1px solid #d8dce0;border-radius:6px;padding:8px;
display:flex;gap:8px;content-visibility:auto;contain-intrinsic-size:auto 300px auto 150px}
.card.failed{border-color:#e0a0a0;background:#fff6f6}
[hidden]{display:none!important}
.thumb{flex:none;width:96px;height:96px;object-fit:cover;border-radius:4px;background:#e8eaed}
.none{display:flex;align-items:center;justify-content:center;color:#8a939b;font-size:11px}
figcaption{min-width:0;flex:1}
.name{margin:0 0 4px;font-weight:600;overflow-wrap:anywhere}
ol{list-style:none;margin:0;padding:0}
li{display:grid;grid-template-columns:1fr 3.2em;column-gap:4px;font-size:12px}
.label{overflow:hidden;text-overflow:ellipsis;white-space:nowrap}
.score{text-align:right;color:#5c6670}
.bar{grid-column:1/3;height:4px;background:#e8eaed;border-radius:2px;margin-bottom:3px}
.bar span{display:block;height:100%;background:#2f7bd8;border-radius:2px}
.error,.thumb-error{margin:0;font-size:12px;color:#a12622;overflow-wrap:anywhere}
.thumb-error{color:#8a4b00}
#failures{padding:0 20px 20px}
#failures table{border-collapse:collapse;background:#fff;width:100%}
#failures td{border:1px solid #d8dce0;padding:4px 8px;vertical-align:top;
overflow-wrap:anywhere}
#sections{order:-1;padding:8px 20px;background:#fff;border-bottom:1px solid #d8dce0;
overflow-x:auto}
#sections table{border-collapse:collapse;margin:0 0 12px}
#sections th,#sections td{border:1px solid #d8dce0;padding:3px 8px;text-align:right}
#sections th{background:#f4f5f7}#sections td.hit{background:#dcebfb;font-weight:600}
#sections .name{text-align:left}
"""


def escaped(value: object) -> str:
    """``value`` as HTML text or an attribute value: terminal-safe (``shown``) and escaped,
    so a file name is never markup."""
    return html.escape(shown(str(value)), quote=True)


def thumbnail(pixels: np.ndarray, size: int = THUMBNAIL) -> bytes:
    """A JPEG of decoded RGB ``pixels`` (an array, not a file) at most ``size`` px a side."""
    from PIL import Image

    image = Image.fromarray(pixels, "RGB")
    image.thumbnail((size, size), Image.Resampling.BILINEAR)
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", quality=QUALITY, optimize=True)
    return buffer.getvalue()


def _head(title: str, source: str) -> str:
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<meta http-equiv="Content-Security-Policy" content="{POLICY}">
<meta name="referrer" content="no-referrer">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{escaped(title)}</title><style>{STYLE}</style></head>
<body><header><h1>{escaped(title)}</h1>
<p>{escaped(source)}</p>
<div class="filters"><label>Label or name <input id="filter-text" type="search"></label>
<span><label><input type="radio" name="state" value="all" checked> all</label>
<label><input type="radio" name="state" value="ok"> succeeded</label>
<label><input type="radio" name="state" value="failed"> failed</label></span>
<output id="shown"></output></div></header>
<main id="cards">
"""


def _predictions(record: Record) -> str:
    rows = "".join(
        f'<li><span class="label" title="{escaped(p.wnid)}">{escaped(p.label)}</span>'
        f'<span class="score">{p.score:.1%}</span>'
        f'<span class="bar"><span style="width:{p.score:.1%}"></span></span></li>'
        for p in record.predictions)
    return f"<ol>{rows}</ol>"


def _image(record: Record) -> str:
    if record.pixels is None:
        return '<div class="thumb none">no image</div>'
    data = base64.b64encode(thumbnail(record.pixels)).decode("ascii")
    return f'<img class="thumb" alt="" src="data:image/jpeg;base64,{data}">'


def _card(record: Record, note: str | None) -> str:
    failed = record.error is not None
    words = [record.path, *(w for p in record.predictions for w in (p.label, p.wnid))]
    body = (f'<p class="error">{escaped(record.error)}</p>' if failed
            else _predictions(record))
    if note:
        body += f'<p class="thumb-error">{escaped(note)}</p>'
    return (f'<figure class="card{" failed" if failed else ""}" '
            f'data-state="{"failed" if failed else "ok"}" '
            f'data-text="{escaped(" ".join(words).lower())}">{_image(record)}'
            f'<figcaption><p class="name">{escaped(record.path)}</p>{body}</figcaption>'
            "</figure>\n")


def _summary(classified: int, failed: int, elapsed: float | None,
             notes: Iterable[str], figures: dict[str, object] | None = None) -> str:
    done = classified + failed
    if figures is None:
        figures = {"classified": classified, "failed": failed,
                   "elapsed": "not recorded" if elapsed is None else f"{elapsed:.1f} s",
                   "images/s": ("-" if not elapsed else f"{done / elapsed:.2f}")}
    items = "".join(f"<div><dt>{name}</dt><dd>{escaped(value)}</dd></div>"
                    for name, value in figures.items())
    paragraphs = "".join(f'<p class="note">{escaped(note)}</p>' for note in notes)
    return f'<section id="summary"><h2>Summary</h2><dl>{items}</dl>{paragraphs}</section>\n'


class HtmlReport:
    """The report written to the binary ``stream``: the head at once, a card per
    ``write``, then ``finish`` adds the failed files, the summary and the script.
    ``classified`` and ``failed`` count the records written. The failed files' rows wait
    in ``failures`` (default: in memory; ``open_report`` gives a temporary file). A failed
    write (a full disk) is an ``OutputError`` naming the report as ``name``."""

    identities: frozenset[tuple[int, int]] = frozenset()  # its files: never a run's inputs

    def __init__(self, stream: BinaryIO, title: str = "irv2 report", source: str = "",
                 failures: BinaryIO | None = None, name: str = "report"):
        self.stream, self.name = stream, name
        self.classified = self.failed = 0
        self._failures = failures if failures is not None else io.BytesIO()
        self._put(_head(title, source))

    def write(self, record: Record, note: str | None = None) -> None:
        """One record's card (its thumbnail from ``record.pixels``, if any); ``note`` says
        why an image has none."""
        self._put(_card(record, note))
        if record.error is None:
            self.classified += 1
            return
        self.failed += 1
        self._put(f'<tr class="failure"><td>{escaped(record.path)}</td>'
                  f"<td>{escaped(record.error)}</td></tr>\n", self._failures)

    def finish(self, elapsed: float | None = None, notes: Iterable[str] = (),
               figures: dict[str, object] | None = None, sections: str = "") -> None:
        """End the report: the failed files, the summary (``elapsed`` seconds, if known;
        ``notes`` such as an interruption; ``figures`` instead of the run's counts and
        speed), then ``sections`` (HTML, its text escaped by the caller), shown between
        the summary and the cards, and the filter script."""
        self._put(f'</main>\n<section id="failures"><h2>Failed files ({self.failed})</h2>'
                  "<table>\n")
        self._failures.seek(0)
        self._do(shutil.copyfileobj, self._failures, self.stream)
        self._put("</table></section>\n"
                  + _summary(self.classified, self.failed, elapsed, notes, figures)
                  + (f'<div id="sections">{sections}</div>\n' if sections else "")
                  + f"<script>{SCRIPT}</script>\n</body></html>\n")
        self._do(self.stream.flush)

    def _put(self, html_text: str, stream: BinaryIO | None = None) -> None:
        self._do((stream or self.stream).write, html_text.encode(ENCODING))

    def _do(self, operation, *args) -> None:
        try:
            operation(*args)
        except OSError as exc:
            raise write_error(self.name, exc) from None


def check_report_path(path: Path, overwrite: bool) -> None:
    """Refuse a report path that is not a regular file, or an existing non-empty file
    without ``overwrite`` (an empty file counts as missing, as for results files)."""
    try:
        info = path.stat()
    except FileNotFoundError:
        return
    except OSError as exc:
        raise OutputError(f"{shown(path)}: cannot write the report ({exc.strerror}).") from None
    if not stat.S_ISREG(info.st_mode):
        raise OutputError(f"{shown(path)} is not a regular file; choose another report path")
    if info.st_size and not overwrite:
        raise OutputError(f"{shown(path)} already exists", hint=Hint.OVERWRITE)


@contextlib.contextmanager
def open_report(path: Path, *, overwrite: bool = False, title: str = "irv2 report",
                source: str = "") -> Iterator[HtmlReport]:
    """A report written to a staged file beside ``path`` and put in place when the block
    ends without an error (call ``finish`` first); on an error ``path`` stays as it was.
    An existing report is replaced only with ``overwrite``."""
    check_report_path(path, overwrite)
    inside = False
    try:
        with tempfile.TemporaryFile() as failures, atomic_file(path) as stream:
            inside = True
            report = HtmlReport(stream, title, source, failures, name=str(path))
            report.identities = _identities(stream, path)
            yield report
            inside = False
    except OSError as exc:
        if inside:
            raise  # the block's own error, not the report's
        raise write_error(str(path), exc) from None


def _identities(stream: BinaryIO, path: Path) -> frozenset[tuple[int, int]]:
    """The (device, inode) of the staged report and of the one it replaces, if any."""
    found = {identity(stream.fileno())}
    with contextlib.suppress(OSError):
        info = os.stat(path)
        found.add((info.st_dev, info.st_ino))
    return frozenset(found)


def read_results(path: Path, fmt: str | None = None) -> Iterator[Record]:
    """The complete records of a results file that ``irv2 predict`` wrote, in ``fmt``
    (jsonl, json or csv; default: from its extension); a file that is not one is refused
    naming its first foreign line."""
    scan = RECORDS[output_format(path, fmt)]
    try:
        with open(path, "rb") as stream:
            for record, _ in scan(Lines(stream, path), path, 1):  # a last CSV image: >= 1 row
                yield record
    except OSError as exc:
        raise OutputError(f"{shown(path)}: cannot read results ({exc.strerror}).") from None


def with_pixels(records: Iterable[Record], decoders: DecodePool,
                preprocessing: Preprocessing = CENTRE_CROP
                ) -> Iterator[tuple[Record, str | None]]:
    """Each record, in order, with its image's ``pixels`` decoded again by ``decoders``
    (isolated workers), at most ``AHEAD`` files ahead; or with the reason why not. Error
    records are passed on as they are."""
    from ..inputs.decoding import DecodedInOrder

    def submit(record: Record) -> Future[Outcome] | None:
        return None if record.error else decoders.submit(record.path, preprocessing)

    with DecodedInOrder(records, submit, AHEAD) as decoded:
        for record, outcome in decoded:
            if outcome is None:
                yield record, None
            elif isinstance(outcome, str):
                yield record, f"no thumbnail: {outcome}"
            else:
                yield replace(record, pixels=outcome.pixels), None


def report_results(results: Path, report: Path, decoders: DecodePool, *,
                   preprocessing: Preprocessing = CENTRE_CROP, overwrite: bool = False,
                   fmt: str | None = None) -> tuple[int, int]:
    """Write the report of an earlier run from its results file (in ``fmt``, see
    ``read_results``), the thumbnails decoded again by ``decoders``; return the
    (classified, failed) records it shows."""
    source = f"Results of {os.fspath(results)}"
    with open_report(report, overwrite=overwrite, source=source) as html_report:
        for record, note in with_pixels(read_results(results, fmt), decoders, preprocessing):
            html_report.write(record, note)
        html_report.finish()
    return html_report.classified, html_report.failed
