"""What reaches the terminal: no TensorFlow start-up noise, and tables that never collide
with the live progress bar."""

from __future__ import annotations

import io
import os
import re
import subprocess
import sys
import threading

import pytest
from rich.console import Console

from irv2cli.cli.render import TableWriter, run_progress
from irv2cli.results.labels import Prediction
from irv2cli.results.records import Record

NOISE = ("cuInit", "E0000", "I0000", "oneDNN", "This TensorFlow binary",
         "absl::InitializeLog")


def irv2(*args: str) -> subprocess.CompletedProcess:
    """``python -m irv2cli ARGS`` as a user runs it: TensorFlow's log level left unset."""
    env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}
    return subprocess.run([sys.executable, "-m", "irv2cli", *args], env=env,
                          capture_output=True, text=True)


def assert_quiet(stderr: str) -> None:
    noisy = [line for line in stderr.splitlines() if any(n in line for n in NOISE)]
    assert not noisy, "\n".join(noisy)


@pytest.mark.slow
def test_export_keeps_tensorflow_noise_off_stderr(top_weights, tmp_path):
    result = irv2("export", "--format", "keras", "-o", str(tmp_path / "model.keras"),
                  "--weights", str(top_weights))
    assert result.returncode == 0, result.stderr
    assert_quiet(result.stderr)


@pytest.mark.slow
def test_keras_backend_keeps_tensorflow_noise_off_stderr(top_weights, samples):
    result = irv2("predict", str(samples / "chelsea.jpg"), "--backend", "keras",
                  "--weights", str(top_weights), "--format", "jsonl")
    assert result.returncode == 0, result.stderr
    assert '"puck"' in result.stdout or '"predictions"' in result.stdout
    assert_quiet(result.stderr)


@pytest.mark.slow  # imports TensorFlow
def test_filter_drops_only_the_noise(capfd):
    from irv2cli.network.quiet import filtered_stderr

    noise = (b"I0000 00:00:1795997885.576868   16525 cudart_stub.cc:31] Could not find cuda "
             b"drivers on your machine, GPU will not be used.\n"
             b"E0000 00:00:1795997755.952330   14678 cuda_platform.cc:52] failed call to "
             b"cuInit: INTERNAL: CUDA error: Failed call to cuInit: UNKNOWN ERROR (303)\n")
    real = b"E0000 00:00:1795997755.952330   14678 op_kernel.cc:1830] OP_REQUIRES failed\n"
    with filtered_stderr():
        os.write(2, noise + real + b"Traceback (most recent call last):\n")
        thread = threading.Thread(target=os.write, args=(2, b"from a thread\n"))
        thread.start()
        thread.join()
        os.write(2, b"an unfinished line")
    os.write(2, b" goes on\n")  # the window closed: straight to stderr, after the rest
    assert capfd.readouterr().err == (real.decode() + "Traceback (most recent call last):\n"
                                      "from a thread\nan unfinished line goes on\n")


@pytest.mark.slow  # imports TensorFlow, starts a process
def test_filter_does_not_wait_for_children_that_inherited_it(capfd):
    """A process started meanwhile (a decoding worker) keeps the pipe as its stderr: the
    window still closes at once, and what the child writes later still arrives."""
    from irv2cli.network.quiet import filtered_stderr

    with filtered_stderr():
        child = subprocess.Popen([sys.executable, "-c", "import sys; sys.stdin.read(); "
                                  "sys.stderr.write('child after the window\\n')"],
                                 stdin=subprocess.PIPE)
    child.communicate(b"")  # the window closed with the child still running
    filters = [t for t in threading.enumerate() if t.name == "irv2-stderr-filter"]
    for thread in filters:
        thread.join()
    assert capfd.readouterr().err == "child after the window\n"


# --- tables and the live bar ------------------------------------------------------------

CSI = re.compile(r"\x1b\[([?\d;]*)([A-Za-z])")


def screen(stream: str) -> list[str]:
    """The lines a terminal shows after ``stream``: text, CR, LF, cursor up and erase
    line are followed; colours and other controls are dropped."""
    rows, row, col = [[]], 0, 0
    position = 0
    while position < len(stream):
        control = CSI.match(stream, position)
        if control:
            count, kind = control.group(1), control.group(2)
            if kind == "A":
                row = max(0, row - int(count or 1))
            elif kind == "K":
                rows[row][col if count in ("", "0") else 0:] = []
            position = control.end()
            continue
        char = stream[position]
        position += 1
        if char == "\r":
            col = 0
        elif char == "\n":
            row, col = row + 1, 0
            rows.extend([] for _ in range(row + 1 - len(rows)))
        elif char >= " ":
            line = rows[row]
            line.extend(" " * (col + 1 - len(line)))
            line[col] = char
            col += 1
    return ["".join(line).rstrip() for line in rows]


class Terminal(io.StringIO):
    """What a terminal receives, from stdout and stderr alike."""

    def isatty(self) -> bool:
        return True


def record(name: str) -> Record:
    return Record(name, [Prediction(1, 0, "n01440764", "tench", 0.5)])


def run_with_bar(stdout: io.StringIO, stderr: io.StringIO, monkeypatch) -> None:
    """Two tables written while the run's bar is live, as ``irv2 predict a b`` does."""
    monkeypatch.setattr(sys, "stdout", stdout)
    console = Console(file=stderr, force_terminal=True, width=100, soft_wrap=True,
                      markup=False)
    writer = TableWriter()
    with run_progress(console, enabled=True) as progress:
        task = progress.add_task("", total=2, rate=0.0, failed=0)
        for name in ("/photos/a.jpg", "/photos/b.jpg"):
            writer.write(record(name))
            progress.update(task, advance=1, rate=1.0, failed=0)


def test_tables_print_above_the_live_bar_in_a_terminal(monkeypatch):
    terminal = Terminal()
    run_with_bar(terminal, terminal, monkeypatch)
    lines = screen(terminal.getvalue())
    titles = [line for line in lines if "/photos/" in line]
    assert titles == ["/photos/a.jpg", "/photos/b.jpg"]
    assert "tench" in lines[lines.index(titles[0]) + 4]
    shown = [line for line in lines if line]
    assert [line for line in shown if "img/s" in line] == [shown[-1]]  # one bar, below
    assert "2/2" in shown[-1]


def test_piped_tables_hold_no_progress_frames(monkeypatch):
    piped, terminal = io.StringIO(), Terminal()
    run_with_bar(piped, terminal, monkeypatch)
    out = piped.getvalue()
    assert [line.strip() for line in out.splitlines() if "/photos/" in line] == [
        "/photos/a.jpg", "/photos/b.jpg"]
    assert "img/s" not in out and "failed" not in out and "\x1b" not in out
    assert "/photos/" not in terminal.getvalue() and "img/s" in terminal.getvalue()


@pytest.mark.slow  # imports TensorFlow
def test_cuinit_failing_is_noise_only_where_there_is_no_gpu_driver():
    from irv2cli.network.quiet import tensorflow_noise

    line = (b"E0000 00:00:1795997755.952330   14678 cuda_platform.cc:52] failed call to "
            b"cuInit: INTERNAL: CUDA error: Failed call to cuInit: UNKNOWN ERROR (303)")
    onednn = (b"I0000 00:00:1795997885.576868   16525 port.cc:153] oneDNN custom operations "
              b"are on. You may see slightly different numerical results")
    assert tensorflow_noise(gpu_driver=False).match(line)
    assert not tensorflow_noise(gpu_driver=True).match(line)  # says why the GPU is unused
    assert tensorflow_noise(gpu_driver=True).match(onednn)


class UncountedRunner:
    """A runner that, like Ray's, cannot count the inputs before it starts."""

    def total(self, job) -> None:
        return None

    def records(self, job):
        yield from (record("/photos/a.jpg"), record("/photos/b.jpg"))


@pytest.mark.parametrize("verbose, bar", [(False, True), (True, False)])
def test_a_run_on_ray_draws_irv2s_bar_in_a_terminal_unless_verbose(monkeypatch, verbose,
                                                                   bar):
    """With --verbose, Ray Data draws its own progress instead."""
    from irv2cli.cli import runs
    from irv2cli.cli.plan import RunPlan
    from irv2cli.pipeline.job import RunOptions

    terminal = Terminal()
    console = Console(file=terminal, force_terminal=True, width=100)
    monkeypatch.setattr(runs, "stderr_console", lambda: console)
    monkeypatch.setattr(sys, "stdout", io.TextIOWrapper(io.BytesIO()))
    plan = RunPlan(("/photos",), None, RunOptions(), UncountedRunner(),
                   stdout_format="jsonl", verbose=verbose)

    assert runs.execute(plan, plan.runner) == 0
    shown = screen(terminal.getvalue())
    bars = [line for line in shown if line.startswith("classifying")]
    assert bool(bars) == bar, shown
    assert all("2/?" in line and "img/s" in line for line in bars), bars
