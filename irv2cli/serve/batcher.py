"""Dynamic batching: the images of concurrent requests meet in one engine call.

The engine runs on threads of its own (ONNX Runtime releases the GIL), fed by a queue
that the event loop fills. When the engine is idle, a thread takes what is queued, up to
``max_batch`` images. It waits for company, at most ``max_delay`` seconds after the
oldest image arrived, only while more images are known to be on their way (accepted and
being decoded): a lone request on an idle server never waits.

Up to ``concurrent`` engine calls run at once. A call beside one already running starts
only once it has its share of a full batch (``max_batch / concurrent`` images), so that
concurrency never splits the work into batches of one or two.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from ..engines.base import Engine, Outputs, finite_scores
from ..inputs.images import to_input


@dataclass
class _Waiting:
    pixels: np.ndarray  # 299x299x3 uint8
    answer: asyncio.Future
    since: float


class Batcher:
    """Runs ``engine`` on batches of the images given to ``infer``, up to ``concurrent``
    calls at once; ``on_batch(size, seconds)`` hears of each call (on the engine's
    thread)."""

    def __init__(self, engine: Engine, max_batch: int, max_delay: float,
                 on_batch: Callable[[int, float], None] = lambda size, seconds: None,
                 concurrent: int = 1):
        self.engine, self.max_batch, self.max_delay = engine, max_batch, max_delay
        self._on_batch = on_batch
        self._share = -(-max_batch // concurrent)  # what a call beside another waits for
        self._queue: deque[_Waiting] = deque()
        self._coming = 0  # images being decoded that will be given to infer
        self._running = 0  # engine calls under way (or gathering their images)
        self._gathering = False  # a call is waiting for company
        self._changed = threading.Condition()
        self._closed = False
        self._threads = [threading.Thread(target=self._serve, name=f"irv2-batcher-{n}",
                                          daemon=True) for n in range(concurrent)]
        for thread in self._threads:
            thread.start()

    def expect(self) -> None:
        """One more image is being decoded and will come to ``infer`` (or ``forget``)."""
        with self._changed:
            self._coming += 1

    def forget(self) -> None:
        """An image ``expect`` announced will not come (it could not be decoded)."""
        with self._changed:
            self._coming -= 1
            self._changed.notify_all()

    async def infer(self, pixels: np.ndarray) -> Outputs:
        """The engine's outputs for one decoded image (announced by ``expect``), each
        output's row for it; the engine's error, if it fails."""
        loop = asyncio.get_running_loop()
        waiting = _Waiting(pixels, loop.create_future(), time.monotonic())
        with self._changed:
            if self._closed:
                raise RuntimeError("the batcher is closed")
            self._coming -= 1
            self._queue.append(waiting)
            self._changed.notify_all()
        return await waiting.answer

    def close(self) -> None:
        """Stop once the images already queued are answered (those whose requests were
        given up are skipped)."""
        with self._changed:
            self._closed = True
            self._changed.notify_all()
        for thread in self._threads:
            thread.join()

    def _next_batch(self) -> list[_Waiting] | None:
        """The next images to run, once there are some (and, beside a call under way, its
        share of them; when none is, company not worth waiting for); ``None`` once closed
        and answered."""
        with self._changed:
            while not (self._queue and not self._gathering
                       and (self._running == 0 or len(self._queue) >= self._share)):
                if self._closed and not self._queue:
                    return None
                self._changed.wait()
            alone = self._running == 0
            self._running += 1  # from now: another call waits for its share
            if alone:  # and no other takes images while this one waits for company
                self._gathering = True
                deadline = self._queue[0].since + self.max_delay
                while (len(self._queue) < self.max_batch and self._coming > 0
                       and not self._closed and (left := deadline - time.monotonic()) > 0):
                    self._changed.wait(left)
                self._gathering = False
            batch = []
            while self._queue and len(batch) < self.max_batch:
                waiting = self._queue.popleft()
                if not waiting.answer.done():  # else its request was given up (stopped)
                    batch.append(waiting)
            if self._queue:  # more than a batch: another call may have its share
                self._changed.notify_all()
            return batch

    def _serve(self) -> None:
        while (batch := self._next_batch()) is not None:
            try:
                if batch:
                    self._run(batch)
            finally:
                with self._changed:
                    self._running -= 1
                    self._changed.notify_all()  # a call waiting for its share may go now

    def _run(self, batch: list[_Waiting]) -> None:
        started = time.perf_counter()
        try:
            outputs = finite_scores(self.engine(to_input(np.stack([w.pixels for w in batch]))))
        except Exception as exc:  # the engine failed: every image of the batch says so
            for waiting in batch:
                answer_from_thread(waiting.answer, exception=exc)
            return
        self._on_batch(len(batch), time.perf_counter() - started)
        for i, waiting in enumerate(batch):
            answer_from_thread(waiting.answer,
                               {name: values[i] for name, values in outputs.items()})


def answer_from_thread(future: asyncio.Future, result: object = None,
                       exception: BaseException | None = None) -> None:
    """Settle ``future`` from another thread, on its event loop's, unless it was given up
    (cancelled) meanwhile."""

    def settle() -> None:
        if future.done():  # cancelled: the client went away
            return
        if exception is not None:
            future.set_exception(exception)
        else:
            future.set_result(result)

    with contextlib.suppress(RuntimeError):  # the loop is closed: nobody waits any more
        future.get_loop().call_soon_threadsafe(settle)
