"""The ``irv2`` process ends as soon as its command is done and its exit handlers have
run: what is buffered for stdout arrives, the status is the command's, the interpreter's
teardown is skipped, a late signal changes nothing, no thread is cut short, and closed
standard streams are no failure."""

from __future__ import annotations

import subprocess
import sys

import pytest

pytestmark = pytest.mark.slow  # every test starts a process

# ``program()`` with the command replaced by the test's ``command``.
PRELUDE = """
import atexit, os, signal, sys, threading, time
from irv2cli.cli import main as entry

def command():
    atexit.register(lambda: print("exit handler ran"))
    print("buffered output", end=" ")
"""


def run_program(command: str) -> subprocess.CompletedProcess:
    code = PRELUDE + "".join(f"    {line}\n" for line in command.splitlines())
    code += "entry.main = command\nentry.program()\nprint('never reached')\n"
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=60)


def test_the_process_ends_with_the_status_its_handlers_run_and_its_output_flushed():
    done = run_program("sys.exit(3)")
    assert done.returncode == 3
    assert done.stdout == "buffered output exit handler ran\n"
    assert done.stderr == ""


def test_the_interpreter_s_teardown_is_skipped():
    done = run_program("class Noisy:\n    def __del__(self):\n        print('torn down')\n"
                       "command.noisy = Noisy()\nsys.exit(0)")
    assert done.returncode == 0
    assert done.stdout == "buffered output exit handler ran\n"  # never 'torn down'


def test_a_signal_once_the_command_is_done_changes_nothing():
    done = run_program("atexit.register(lambda: (os.kill(os.getpid(), signal.SIGINT), "
                       "os.kill(os.getpid(), signal.SIGTERM), time.sleep(0.2)))\nsys.exit(0)")
    assert done.returncode == 0
    assert done.stdout == "buffered output exit handler ran\n"
    assert done.stderr == ""


def test_a_thread_that_is_not_a_daemon_is_let_finish():
    done = run_program("threading.Thread(target=lambda: (time.sleep(0.5), "
                       "print('thread done', end=' '))).start()\nsys.exit(0)")
    assert done.returncode == 0
    assert done.stdout == "buffered output thread done exit handler ran\n"


def test_a_message_status_is_printed_and_exits_1():
    done = run_program("sys.exit('a message')")
    assert done.returncode == 1
    assert done.stderr == "a message\n"
    assert done.stdout == "buffered output exit handler ran\n"


def test_a_bug_shows_its_traceback_once_and_exits_1():
    done = run_program("1 / 0")
    assert done.returncode == 1
    assert done.stderr.count("Traceback") == 1
    assert done.stderr.rstrip().endswith("ZeroDivisionError: division by zero")
    assert done.stdout == "buffered output exit handler ran\n"


def test_main_in_a_python_process_raises_system_exit_and_leaves_the_process_alone():
    done = subprocess.run(
        [sys.executable, "-c", "import sys\nfrom irv2cli.cli import main as entry\n"
         "sys.argv = ['irv2', '--version']\n"
         "try:\n    entry.main()\nexcept SystemExit as exc:\n    print('status', exc.code)\n"
         "print('still here')"], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0
    assert done.stdout.endswith("status 0\nstill here\n")


def test_closed_standard_streams_are_no_failure():
    for closed in (0, 1, 2):
        done = subprocess.run(
            [sys.executable, "-c", f"import os, sys; os.close({closed}); "
             "os.execv(sys.executable, [sys.executable, '-m', 'irv2cli', '--version'])"],
            capture_output=closed != 1, timeout=60)
        assert done.returncode == 0, (closed, done.stderr)
