"""A run on Ray that stops moving says so (``cluster.stall``), once per stall."""

from __future__ import annotations

import threading
import time

from irv2cli.cluster.stall import StallWatch


class Clock:
    def __init__(self):
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def watch(patience: float = 60.0) -> tuple[StallWatch, Clock, list[str]]:
    clock, said = Clock(), []
    return StallWatch(said.append, lambda: "0 of 2 CPUs free", patience, clock), clock, said


def test_a_run_that_moves_says_nothing():
    stall, clock, said = watch()
    for _ in range(10):
        clock.now += 59
        stall.moved()
        stall.check()

    assert said == []


def test_a_stall_is_said_with_what_the_cluster_has_and_again_while_it_lasts():
    stall, clock, said = watch()
    clock.now = 61
    stall.check()
    clock.now = 90
    stall.check()
    clock.now = 125
    stall.check()

    assert len(said) == 2
    assert said[0].startswith("no image finished in the last 61 s")
    assert said[1].startswith("no image finished in the last 125 s")
    assert "0 of 2 CPUs free" in said[0] and "ray status" in said[0]


def test_a_run_that_moves_again_and_stalls_anew_is_said_again():
    stall, clock, said = watch()
    clock.now = 61
    stall.check()
    stall.moved()
    clock.now = 122
    stall.check()

    assert len(said) == 2


def test_the_watch_thread_says_it_and_ends_with_the_block():
    said = []
    with StallWatch(said.append, lambda: "no CPUs", patience=0.05):
        deadline = time.monotonic() + 10
        while not said and time.monotonic() < deadline:
            time.sleep(0.01)

    assert "no CPUs" in said[0]
    assert "irv2-stall-watch" not in [thread.name for thread in threading.enumerate()]
