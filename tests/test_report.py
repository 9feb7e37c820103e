"""The HTML report: written as records come, escaped, self-contained, placed atomically,
and checked in a real browser (headless Chromium, network off)."""

from __future__ import annotations

import base64
import hashlib
import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image
from support import predict

from irv2cli.cli.main import cli
from irv2cli.errors import Hint, OutputError
from irv2cli.results.labels import decode_top_k
from irv2cli.results.records import Record
from irv2cli.results.report import SCRIPT, HtmlReport, open_report, read_results
from irv2cli.results.writers import WRITERS

pytestmark = pytest.mark.in_memory_engine  # the subject is not the network

HOSTILE = "<img src=x onerror=document.title='PWNED'>.jpg"
SHOWN_HOSTILE = "&lt;img src=x onerror=document.title='PWNED'&gt;.jpg"  # in a DOM dump
LATIN1 = os.fsdecode(b"caf\xe9.jpg")  # a name that is not UTF-8
CHROMIUM = next(filter(None, map(shutil.which, ("chromium", "chromium-browser",
                                                "google-chrome"))), None)


def needs_chromium(test):
    """A test in headless Chromium (``browser``), which CI installs."""
    reason = "no chromium binary: apt-get install -y chromium (.ci/run does)"
    return pytest.mark.browser(pytest.mark.skipif(CHROMIUM is None, reason=reason)(test))


def cat(seed: int = 0) -> np.ndarray:
    """Network-input pixels: 299x299x3 uint8 with some structure."""
    rng = np.random.default_rng(seed)
    ramp = np.linspace(0, 255, 299, dtype=np.float32)
    pixels = np.stack([ramp[None, :].repeat(299, 0), ramp[:, None].repeat(299, 1),
                       np.full((299, 299), rng.uniform(0, 255), np.float32)], axis=-1)
    return pixels.astype(np.uint8)


def records(names: list[str], failed: set[str] = frozenset()) -> list[Record]:
    """A classified record with pixels for each name, an error record for ``failed``."""
    rng = np.random.default_rng(1)
    return [Record(name, error=f"{name}: not an image") if name in failed
            else Record(name, decode_top_k(rng.dirichlet(np.full(1000, 0.05)), 5),
                        pixels=cat(i))
            for i, name in enumerate(names)]


def written(path: Path, items: list[Record], **finish) -> str:
    with open_report(path) as report:
        for record in items:
            report.write(record)
        report.finish(**finish)
    return path.read_text(encoding="utf-8")


def test_names_and_errors_are_text_never_markup(tmp_path):
    page = written(tmp_path / "r.html", records(["a.jpg", HOSTILE, LATIN1, "b\x1b[31m.jpg"],
                                                failed={"a.jpg"}), elapsed=2.0)
    assert "<img src=x" not in page
    assert "&lt;img src=x onerror=document.title=&#x27;PWNED&#x27;&gt;.jpg" in page
    assert "caf\\udce9.jpg" in page and "b\\x1b[31m.jpg" in page
    assert page.count('<figure class="card') == 4 and page.count('class="failure"') == 1


def test_the_page_loads_nothing_and_runs_only_its_own_script(tmp_path):
    page = written(tmp_path / "r.html", records(["a.jpg"]))
    policy = re.search(r'http-equiv="Content-Security-Policy" content="([^"]+)"', page)[1]
    digest = base64.b64encode(hashlib.sha256(SCRIPT.encode()).digest()).decode()
    assert "default-src 'none'" in policy and f"script-src 'sha256-{digest}'" in policy
    assert f"<script>{SCRIPT}</script>" in page and page.count("<script") == 1
    assert not re.search(r"(src|href)=\"(?!data:)", page)  # every image is a data: URI
    assert "http://" not in page and "https://" not in page


def test_the_summary_ends_the_file_with_the_counts(tmp_path):
    page = written(tmp_path / "r.html", records(["a.jpg", "b.jpg", "c.jpg"], {"b.jpg"}),
                   elapsed=4.0, notes=["interrupted"])
    summary = page[page.index('<section id="summary">'):]
    for figure in ("classified</dt><dd>2", "failed</dt><dd>1", "elapsed</dt><dd>4.0 s",
                   "images/s</dt><dd>0.75", "interrupted"):
        assert figure in summary
    assert page.index("Failed files (1)") < page.index('id="summary"')


def test_an_existing_report_needs_overwrite_and_survives_a_failed_one(tmp_path):
    path = tmp_path / "r.html"
    path.write_text("old")
    with pytest.raises(OutputError) as refused:
        written(path, records(["a.jpg"]))
    assert refused.value.hint is Hint.OVERWRITE
    with pytest.raises(RuntimeError), open_report(path, overwrite=True) as report:
        report.write(records(["a.jpg"])[0])
        raise RuntimeError("the run failed")
    assert path.read_text() == "old" and os.listdir(tmp_path) == ["r.html"]
    path.write_text("")  # an empty file counts as missing, as for results files
    assert "a.jpg" in written(path, records(["a.jpg"]))


def test_a_report_path_that_is_a_folder_is_refused(tmp_path):
    with pytest.raises(OutputError, match="not a regular file"):
        written(tmp_path, records(["a.jpg"]))


def test_cards_are_written_as_records_come_and_failures_wait_in_the_spool(tmp_path):
    with open(tmp_path / "r.html", "wb") as stream, open(tmp_path / "spool", "w+b") as spool:
        report = HtmlReport(stream, failures=spool)
        for record in records(["a.jpg", "x.jpg"], {"x.jpg"}):
            report.write(record)
        stream.flush()
        spool.flush()
        assert (tmp_path / "r.html").read_bytes().count(b'<figure class="card') == 2
        assert b'class="failure"' in (tmp_path / "spool").read_bytes()
        report.finish()
    assert (report.classified, report.failed) == (1, 1)


@pytest.mark.parametrize("fmt", ["jsonl", "json", "csv"])
def test_results_files_read_back(tmp_path, fmt):
    items = records(["a.jpg", LATIN1, "c.jpg"], {"c.jpg"})
    path = tmp_path / f"results.{fmt}"
    with open(path, "w", encoding="utf-8", errors="surrogateescape", newline="") as stream:
        writer = WRITERS[fmt](stream)
        for record in items:
            writer.write(record)
        writer.close()
    assert list(read_results(path)) == items


@pytest.fixture
def pools(monkeypatch) -> list[tuple]:
    """``irv2 report`` decodes with a stand-in for ``DecodePool`` that records how each
    was started, (workers, limits): for error records only, which it never decodes."""
    started = []

    class RecordingPool:
        def __init__(self, workers, limits=None):
            started.append((workers, limits))

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            return False

    monkeypatch.setattr("irv2cli.inputs.decoding.DecodePool", RecordingPool)
    monkeypatch.delenv("IRV2_DECODE_MEMORY", raising=False)
    monkeypatch.delenv("IRV2_DECODE_TIMEOUT", raising=False)
    return started


@pytest.fixture
def failed_results(tmp_path):
    """A results file of two failed images, in JSON lines, named ``results.log`` (no
    known extension)."""
    path = tmp_path / "results.log"
    with open(path, "w", encoding="utf-8") as stream:
        writer = WRITERS["jsonl"](stream)
        for record in records(["a.jpg", "b.jpg"], {"a.jpg", "b.jpg"}):
            writer.write(record)
        writer.close()
    return path


def test_report_reads_an_unknown_extension_with_format(failed_results, pools, tmp_path):
    out = tmp_path / "r.html"
    result = CliRunner().invoke(cli, ["report", str(failed_results), "-o", str(out)])
    assert result.exit_code == 1 and "pass --format" in result.stderr
    assert not out.exists() and pools == []  # refused before any work
    result = CliRunner().invoke(cli, ["report", str(failed_results), "-o", str(out),
                                      "--format", "jsonl"])
    assert result.exit_code == 0, result.output
    assert "0 classified, 2 failed" in result.stderr and out.exists()


def test_report_decodes_within_the_decode_limits(failed_results, pools, tmp_path,
                                                 monkeypatch):
    from irv2cli.inputs.decoding import DecodeLimits

    out = tmp_path / "r.html"
    args = ["report", str(failed_results), "-o", str(out), "--format", "jsonl"]
    assert CliRunner().invoke(cli, args).exit_code == 0
    assert pools[-1][1] == DecodeLimits(2 << 30, 30.0)  # predict's defaults
    result = CliRunner().invoke(cli, [*args, "--overwrite", "--workers", "3",
                                      "--decode-memory", "512MiB", "--decode-timeout", "5"])
    assert result.exit_code == 0, result.output
    assert pools[-1] == (3, DecodeLimits(512 << 20, 5.0))
    monkeypatch.setenv("IRV2_DECODE_MEMORY", "1GiB")
    monkeypatch.setenv("IRV2_DECODE_TIMEOUT", "7.5")
    assert CliRunner().invoke(cli, [*args, "--overwrite"]).exit_code == 0
    assert pools[-1][1] == DecodeLimits(1 << 30, 7.5)


def test_predict_refuses_an_existing_report_before_it_runs(tmp_path, samples):
    report = tmp_path / "r.html"
    report.write_text("keep me")
    result = predict(samples / "chelsea.jpg", "--report", report)
    assert result.exit_code == 1
    assert "r.html already exists; pass --overwrite to replace it." in result.output
    assert report.read_text() == "keep me"
    assert predict(samples / "chelsea.jpg", "--resume", "--report", report).exit_code == 2


# --- in a browser ------------------------------------------------------------------------

OFFLINE = ["--proxy-server=127.0.0.1:9", "--host-resolver-rules=MAP * ~NOTFOUND"]


def chromium(page: Path, *args: str) -> subprocess.CompletedProcess:
    """Headless Chromium on ``page`` (from disk), with no network to reach."""
    return subprocess.run(
        [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--window-size=1200,900",
         *OFFLINE, *args, page.resolve().as_uri()],
        capture_output=True, text=True, timeout=120, check=True)


def browsed(page: Path, tmp_path: Path) -> tuple[str, Image.Image]:
    """The DOM after the page's script ran, and a screenshot."""
    dom = chromium(page, "--dump-dom").stdout
    shot = tmp_path / "shot.png"
    chromium(page, f"--screenshot={shot}")
    return dom, Image.open(shot).convert("RGB")


def check_shown(dom: str, image: Image.Image, cards: int, failures: int) -> None:
    """One card per image, one entry per failure, the script ran, the hostile name did not,
    and the screenshot shows something."""
    assert dom.count('<figure class="card') == cards
    assert dom.count('<tr class="failure">') == failures
    assert f'<output id="shown">{cards} of {cards} shown</output>' in dom  # our script ran
    assert "<title>irv2 report</title>" in dom  # no name's script changed it
    assert '<img src="x"' not in dom
    colours = image.getcolors(1 << 20)
    assert colours is None or len(colours) > 1
    assert image.getextrema() != ((255, 255), (255, 255), (255, 255))


@pytest.mark.slow
@needs_chromium
def test_a_browser_shows_the_report_and_runs_no_name(tmp_path):
    page = tmp_path / "report.html"
    written(page, records(["a.jpg", HOSTILE, LATIN1, "d.jpg"], {"d.jpg"}), elapsed=1.0)
    dom, image = browsed(page, tmp_path)
    check_shown(dom, image, cards=4, failures=1)
    assert SHOWN_HOSTILE in dom and "caf\\udce9.jpg" in dom


@pytest.fixture
def folder(tmp_path, samples) -> Path:
    """Two photos, one under a hostile name, and a file that is not an image."""
    folder = tmp_path / "photos"
    folder.mkdir()
    shutil.copy(samples / "chelsea.jpg", folder / "chelsea.jpg")
    shutil.copy(samples / "coffee.jpg", folder / HOSTILE)
    (folder / "notes.jpg").write_text("not an image")
    return folder


@needs_chromium
def test_predict_and_irv2_report_write_the_same_cards(weights, folder, tmp_path):
    results, page = tmp_path / "results.jsonl", tmp_path / "predict.html"
    ran = predict(folder, "--weights", weights, "-o", results, "--report", page)
    assert ran.exit_code == 1, ran.output  # notes.jpg failed
    dom, image = browsed(page, tmp_path)
    check_shown(dom, image, cards=3, failures=1)
    assert dom.count('src="data:image/jpeg;base64,') == 2
    assert "classified</dt><dd>2" in dom and "images/s</dt><dd>-" not in dom

    again = tmp_path / "again.html"
    made = CliRunner().invoke(cli, ["report", str(results), "-o", str(again)],
                              catch_exceptions=False)
    assert made.exit_code == 0, made.output
    assert "2 classified, 1 failed" in made.output
    redone, image = browsed(again, tmp_path)
    check_shown(redone, image, cards=3, failures=1)
    assert redone.count('src="data:image/jpeg;base64,') == 2
    assert SHOWN_HOSTILE in dom and SHOWN_HOSTILE in redone


def test_an_interrupted_run_places_its_report_saying_so(weights, folder, tmp_path,
                                                         monkeypatch):
    page, write = tmp_path / "r.html", HtmlReport.write

    def interrupt_after_one(report, record, note=None):
        if report.classified + report.failed:
            raise KeyboardInterrupt
        write(report, record, note)

    monkeypatch.setattr(HtmlReport, "write", interrupt_after_one)
    result = predict(folder, "--weights", weights, "--format", "jsonl", "--report", page)
    assert result.exit_code == 130
    html = page.read_text(encoding="utf-8")
    assert html.count('<figure class="card') == 1 and html.endswith("</html>\n")
    assert "The run was interrupted: this report shows the images done until then." in html


def test_a_report_inside_an_input_folder_is_never_an_input(weights, folder, tmp_path):
    """Neither the report a run replaces nor the staged one it writes, hidden or not."""
    page = folder / "report.html"
    page.write_text("<html>an earlier report</html>")
    result = predict(folder, "--weights", weights, "--format", "jsonl", "--report", page,
                     "--overwrite", "--include-hidden")
    assert result.exit_code == 1  # notes.jpg, and nothing else, failed
    paths = [json.loads(line)["path"] for line in result.stdout.splitlines()]
    assert sorted(paths) == sorted(str(p) for p in folder.iterdir() if p != page)


def test_a_report_on_the_results_file_is_a_usage_error(tmp_path, samples):
    out = tmp_path / "r.jsonl"
    result = predict(samples / "chelsea.jpg", "-o", out, "--report", tmp_path / "." / "r.jsonl")
    assert result.exit_code == 2 and "the same file" in result.stderr
    assert not out.exists()


def test_a_resumed_run_replaces_the_report_of_the_run_it_finishes(weights, mixed_folder,
                                                                  tmp_path):
    out, page = tmp_path / "r.jsonl", tmp_path / "r.html"
    page.write_text("<html>the interrupted run's report</html>")
    out.write_text("")  # an empty results file counts as missing
    result = predict(mixed_folder, "--weights", weights, "-o", out, "--report", page,
                     "--resume")
    assert result.exit_code == 1, result.output  # notes.jpg
    assert page.read_text(encoding="utf-8").count('<figure class="card') == 3
