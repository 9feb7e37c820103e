"""The ``irv2`` process ends as soon as its command is done: exit handlers run, what is
buffered for stdout arrives, the status is the command's, and no thread is cut short."""

from __future__ import annotations

import subprocess
import sys

PRELUDE = """
import atexit, sys, threading, time
from irv2cli.cli.main import _exit_at_once
atexit.register(lambda: print("exit handler ran"))
print("buffered output", end=" ")
"""


def run_python(code: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", PRELUDE + code], capture_output=True,
                          text=True, timeout=60)


def test_the_process_ends_with_the_status_its_handlers_run_and_its_output_flushed():
    done = run_python("_exit_at_once(SystemExit(3))\nprint('never reached')")
    assert done.returncode == 3
    assert done.stdout == "buffered output exit handler ran\n"


def test_a_thread_that_is_not_a_daemon_is_let_finish():
    done = run_python("threading.Thread(target=lambda: (time.sleep(0.5), print('thread done'))"
                      ").start()\n_exit_at_once(SystemExit(0))\nprint('usual exit', end=' ')")
    assert done.returncode == 0
    assert done.stdout == "buffered output usual exit thread done\nexit handler ran\n"


def test_a_message_status_takes_the_usual_exit():
    done = run_python("_exit_at_once(SystemExit('a message'))\nprint('usual exit', end=' ')")
    assert done.returncode == 0
    assert done.stdout == "buffered output usual exit exit handler ran\n"
