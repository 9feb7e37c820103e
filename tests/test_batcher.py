"""Dynamic batching (``irv2cli.serve.batcher``) without a server: which images meet in
one engine call, and how many calls run at once."""

from __future__ import annotations

import asyncio
import threading

import numpy as np
import pytest

from irv2cli.serve import ServeOptions
from irv2cli.serve.batcher import Batcher


class HeldEngine:
    """Answers each call once ``release`` is set; records each call's batch size, and the
    most calls that ran at once."""

    outputs = ("probabilities",)

    def __init__(self):
        self.release = threading.Event()
        self.sizes: list[int] = []
        self.running = self.most_at_once = 0
        self._lock = threading.Lock()
        self.started = threading.Condition(self._lock)

    def __call__(self, batch: np.ndarray) -> dict[str, np.ndarray]:
        with self._lock:
            self.sizes.append(len(batch))
            self.running += 1
            self.most_at_once = max(self.most_at_once, self.running)
            self.started.notify_all()
        assert self.release.wait(30)
        with self._lock:
            self.running -= 1
        return {"probabilities": np.full((len(batch), 3), 1 / 3, np.float32)}

    def wait_for_calls(self, count: int) -> None:
        with self._lock:
            assert self.started.wait_for(lambda: len(self.sizes) >= count, 10)


IMAGE = np.zeros((299, 299, 3), np.uint8)


async def infer_now(batcher: Batcher) -> asyncio.Task:
    """An image given to ``batcher`` (announced, then handed over), as a task."""
    batcher.expect()
    task = asyncio.create_task(batcher.infer(IMAGE))
    await asyncio.sleep(0.05)  # handed over, and the engine threads have looked at it
    return task


def run_batcher(scenario, concurrent: int, max_batch: int, max_delay: float = 0.0
                ) -> HeldEngine:
    engine = HeldEngine()

    async def main() -> None:
        batcher = Batcher(engine, max_batch, max_delay, concurrent=concurrent)
        try:
            await scenario(engine, batcher)
        finally:
            engine.release.set()
            await asyncio.to_thread(batcher.close)

    asyncio.run(main())
    return engine


def test_a_second_call_starts_beside_a_running_one_only_with_its_share_of_a_batch():
    async def scenario(engine: HeldEngine, batcher: Batcher) -> None:
        first = await infer_now(batcher)
        engine.wait_for_calls(1)  # alone on an idle engine: runs at once, a batch of one
        waiting = [await infer_now(batcher)]
        assert engine.sizes == [1]  # one image is less than half of a batch of 4: it waits
        waiting.append(await infer_now(batcher))
        engine.wait_for_calls(2)  # two are its share: a second call runs beside the first
        engine.release.set()
        answers = await asyncio.gather(first, *waiting)
        assert [a["probabilities"].shape for a in answers] == [(3,)] * 3

    engine = run_batcher(scenario, concurrent=2, max_batch=4)
    assert engine.sizes == [1, 2] and engine.most_at_once == 2


def test_a_call_waiting_for_company_counts_as_running_for_the_other():
    """Found by a hostile review: both idle threads waited for company together, and the
    second ran the one image the first left, beside it."""
    async def scenario(engine: HeldEngine, batcher: Batcher) -> None:
        for _ in range(5):
            batcher.expect()
        first = asyncio.create_task(batcher.infer(IMAGE))
        await asyncio.sleep(0.05)  # a call waits for the four images on their way
        rest = [asyncio.create_task(batcher.infer(IMAGE)) for _ in range(4)]
        await asyncio.sleep(0.05)
        engine.wait_for_calls(1)
        await asyncio.sleep(0.1)
        assert engine.sizes == [4]  # the fifth, short of a share, waits for the first
        engine.release.set()
        await asyncio.gather(first, *rest)

    engine = run_batcher(scenario, concurrent=2, max_batch=4, max_delay=5.0)
    assert engine.sizes == [4, 1] and engine.most_at_once == 1


def test_one_call_at_a_time_takes_everything_queued_meanwhile():
    async def scenario(engine: HeldEngine, batcher: Batcher) -> None:
        first = await infer_now(batcher)
        engine.wait_for_calls(1)
        waiting = [await infer_now(batcher) for _ in range(5)]
        assert engine.sizes == [1]
        engine.release.set()
        await asyncio.gather(first, *waiting)

    engine = run_batcher(scenario, concurrent=1, max_batch=4)
    assert engine.sizes == [1, 4, 1] and engine.most_at_once == 1


def test_images_left_when_the_other_call_ends_run_though_short_of_a_share():
    async def scenario(engine: HeldEngine, batcher: Batcher) -> None:
        first = await infer_now(batcher)
        engine.wait_for_calls(1)
        left = await infer_now(batcher)
        engine.release.set()  # the first call ends: the engine is idle, so one image runs
        await asyncio.gather(first, left)

    engine = run_batcher(scenario, concurrent=2, max_batch=8)
    assert engine.sizes == [1, 1]


@pytest.mark.parametrize(("precision", "asked", "calls"), [
    ("int8", None, 2), ("fp32", None, 1), ("fp32", 3, 3), ("int8", 1, 1)])
def test_concurrent_calls_default_to_two_in_int8_and_one_in_fp32(precision, asked, calls):
    assert ServeOptions(precision=precision, concurrent_batches=asked).calls_at_once == calls


def test_concurrent_batches_must_be_at_least_one():
    with pytest.raises(ValueError, match="concurrent_batches must be at least 1"):
        ServeOptions(concurrent_batches=0)
