"""The ``irv2`` process ends as soon as its command is done: exit handlers run, what is
buffered for stdout arrives, the status is the command's, a late signal changes
nothing, no thread is cut short, and closed standard streams are no failure."""

from __future__ import annotations

import subprocess
import sys

PRELUDE = """
import atexit, os, signal, sys, threading, time
from irv2cli.cli import main as entry
atexit.register(lambda: print("exit handler ran"))
print("buffered output", end=" ")
"""


def run_python(code: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", PRELUDE + code], capture_output=True,
                          text=True, timeout=60)


def test_the_process_ends_with_the_status_its_handlers_run_and_its_output_flushed():
    done = run_python("entry._exit_at_once(3)\nprint('never reached')")
    assert done.returncode == 3
    assert done.stdout == "buffered output exit handler ran\n"


def test_a_signal_once_the_command_is_done_changes_nothing():
    done = run_python("atexit.register(lambda: (os.kill(os.getpid(), signal.SIGINT), "
                      "os.kill(os.getpid(), signal.SIGTERM), time.sleep(0.2)))\n"
                      "entry._exit_at_once(0)")
    assert done.returncode == 0
    assert done.stdout == "buffered output exit handler ran\n"
    assert done.stderr == ""


def test_a_thread_that_is_not_a_daemon_is_let_finish():
    done = run_python("threading.Thread(target=lambda: (time.sleep(0.5), print('thread done'))"
                      ").start()\nentry._exit_at_once(0)\nprint('usual exit', end=' ')")
    assert done.returncode == 0
    assert done.stdout == "buffered output usual exit thread done\nexit handler ran\n"


def test_a_message_status_takes_the_usual_exit():
    done = run_python("entry._exit_at_once('a message')\nprint('usual exit', end=' ')")
    assert done.returncode == 0
    assert done.stdout == "buffered output usual exit exit handler ran\n"


def test_a_bug_shows_its_traceback_once_and_exits_1():
    done = run_python("entry.main = lambda: 1 / 0\nentry.program()")
    assert done.returncode == 1
    assert done.stderr.count("Traceback") == 1
    assert done.stderr.rstrip().endswith("ZeroDivisionError: division by zero")
    assert done.stdout == "buffered output exit handler ran\n"


def test_main_in_a_python_process_raises_system_exit_and_leaves_the_process_alone():
    done = run_python("sys.argv = ['irv2', '--version']\n"
                      "try:\n    entry.main()\nexcept SystemExit as exc:\n"
                      "    print('status', exc.code, end=' ')")
    assert done.returncode == 0
    assert done.stdout.endswith("status 0 exit handler ran\n")


def test_closed_standard_streams_are_no_failure():
    for closed in (0, 1, 2):
        done = subprocess.run(
            [sys.executable, "-c", f"import os, sys; os.close({closed}); "
             "os.execv(sys.executable, [sys.executable, '-m', 'irv2cli', '--version'])"],
            capture_output=closed != 1, timeout=60)
        assert done.returncode == 0, (closed, done.stderr)
