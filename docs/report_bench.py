"""How big a report of N images is, and how soon headless Chromium shows it.

Feeds ``irv2cli.results.report`` synthetic records (no network run): thumbnails cut from
the sample photos, random top-5 scores (made up), one failure in 50. Then opens the file in
headless Chromium over the DevTools pipe and reads the page's own paint timings.

    python docs/report_bench.py --images 10000 --output /tmp/report.html
    python docs/report_bench.py --images 12 --output docs/report.html --screenshot docs/report.png
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import shutil
import statistics
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
from PIL import Image

from irv2cli.results.labels import decode_top_k
from irv2cli.results.records import Record
from irv2cli.results.report import open_report

SAMPLES = Path(__file__).resolve().parent.parent / "samples"


def photos() -> list[np.ndarray]:
    """The sample photos as 299x299 network-input pixels (a plain resize)."""
    return [np.asarray(Image.open(p).convert("RGB").resize((299, 299)))
            for p in sorted(SAMPLES.glob("*.jpg"))]


def records(count: int) -> Iterator[Record]:
    """``count`` synthetic records, made one at a time: the third under a hostile name,
    every 50th from the fifth on a failure."""
    rng = np.random.default_rng(0)
    pictures = photos()
    for i in range(count):
        name = f"photos/{i // 1000:02d}/IMG_{i:05d}.jpg"
        if i == 2:
            name = "photos/00/<img src=x onerror=alert(1)>.jpg"
        if i % 50 == 4:
            yield Record(name, error=f"{name}: cannot identify image file")
            continue
        pixels = np.roll(pictures[i % len(pictures)], 17 * i, axis=1)
        scores = rng.dirichlet(np.full(1000, 0.02))
        yield Record(name, decode_top_k(scores, 5), pixels=pixels)


class DevTools:
    """Headless Chromium driven over ``--remote-debugging-pipe``: it reads commands on its
    fd 3 and writes answers and events on its fd 4, each a JSON text ended by a NUL."""

    def __init__(self, binary: str):
        commands_read, self.commands = os.pipe()
        self.answers, answers_write = os.pipe()
        flags = ("--headless --no-sandbox --disable-gpu --window-size=1200,900 "
                 "--remote-debugging-pipe --proxy-server=127.0.0.1:9 "
                 "'--host-resolver-rules=MAP * ~NOTFOUND'")
        self.process = subprocess.Popen(  # the shell puts the pipes on fds 3 and 4
            f"exec {shlex.quote(binary)} {flags} about:blank "
            f"3<&{commands_read} 4>&{answers_write}",
            shell=True, executable="/bin/sh", pass_fds=(commands_read, answers_write),
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        os.close(commands_read)
        os.close(answers_write)
        self.last_id, self.buffer = 0, b""

    def call(self, method: str, session: str | None = None, **params) -> dict:
        """Send one command and wait for its answer (events meanwhile are dropped)."""
        self.last_id += 1
        message = {"id": self.last_id, "method": method, "params": params}
        if session:
            message["sessionId"] = session
        os.write(self.commands, json.dumps(message).encode() + b"\0")
        while (answer := self.message()).get("id") != self.last_id:
            pass
        return answer.get("result", {})

    def wait_for(self, method: str) -> None:
        while self.message().get("method") != method:
            pass

    def message(self) -> dict:
        while b"\0" not in self.buffer:
            chunk = os.read(self.answers, 1 << 16)
            if not chunk:
                raise RuntimeError("chromium went away")
            self.buffer += chunk
        text, self.buffer = self.buffer.split(b"\0", 1)
        return json.loads(text)

    def close(self) -> None:
        self.process.kill()
        self.process.wait()
        os.close(self.commands)
        os.close(self.answers)


PAINTS = "JSON.stringify(performance.getEntriesByType('paint').map(e => [e.name, e.startTime]))"


def open_timings(binary: str, page: Path) -> dict[str, float]:
    """Milliseconds from navigating to ``page`` to its first contentful paint and to its
    load event, as the page's own performance timeline says; the browser is already up."""
    browser = DevTools(binary)
    try:
        target = browser.call("Target.getTargets")["targetInfos"][0]["targetId"]
        session = browser.call("Target.attachToTarget", targetId=target,
                               flatten=True)["sessionId"]
        browser.call("Page.enable", session)
        browser.call("Page.navigate", session, url=page.resolve().as_uri())
        browser.wait_for("Page.loadEventFired")
        paints = {}
        for _ in range(300):  # headless may paint after the load event
            paints = dict(json.loads(browser.call("Runtime.evaluate", session,
                                                  expression=PAINTS)["result"]["value"]))
            if "first-contentful-paint" in paints:
                break
            time.sleep(0.05)
        load = browser.call("Runtime.evaluate", session, expression=(
            "performance.getEntriesByType('navigation')[0].loadEventEnd"))["result"]["value"]
        return {**paints, "load": load}
    finally:
        browser.close()


def screenshot(binary: str, page: Path, png: Path) -> None:
    """A 1200x900 screenshot of ``page``, in 128 colours to keep the file small."""
    subprocess.run([binary, "--headless", "--no-sandbox", "--disable-gpu",
                    "--window-size=1200,900", "--hide-scrollbars", f"--screenshot={png}",
                    page.resolve().as_uri()], check=True, capture_output=True)
    Image.open(png).convert("RGB").quantize(128).save(png, optimize=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=10_000)
    parser.add_argument("--output", type=Path, default=Path("report.html"))
    parser.add_argument("--screenshot", type=Path, help="also save a 1200x900 screenshot")
    parser.add_argument("--repeat", type=int, default=3, help="page opens to time")
    args = parser.parse_args()

    started = time.perf_counter()
    with open_report(args.output, overwrite=True, source="synthetic records") as report:
        for record in records(args.images):
            report.write(record)
        report.finish(elapsed=time.perf_counter() - started)
    written = time.perf_counter() - started
    size = args.output.stat().st_size
    print(f"{args.images} images: {size / 1e6:.1f} MB ({size / args.images / 1e3:.1f} kB an "
          f"image), written in {written:.1f} s")
    binary = shutil.which("chromium") or shutil.which("chromium-browser")
    if binary is None:
        return
    runs = [open_timings(binary, args.output) for _ in range(args.repeat)]
    for name in ("first-paint", "first-contentful-paint", "load"):
        times = [run[name] for run in runs if name in run]
        if times:
            print(f"{name}: {statistics.median(times):.0f} ms "
                  f"(median of {len(times)}: {', '.join(f'{t:.0f}' for t in times)})")
    if args.screenshot:
        screenshot(binary, args.output, args.screenshot)


if __name__ == "__main__":
    main()
