"""Dynamic micro-batching: photos of concurrent requests are encoded together.

Requests put their photos on one bounded queue (:meth:`MicroBatcher.submit`); each worker takes
the first waiting photo, waits at most ``max_wait`` for others up to ``max_batch``, runs the model
on them in a thread (the event loop keeps accepting requests) and hands every request its rows
of the result. A request whose photos would not fit in the queue is refused at once
(:class:`QueueFull`, answered 503 with ``Retry-After``): the queue never grows without limit.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import torch
from PIL import Image


class QueueFull(Exception):
    """The queue cannot take a request's photos now; try again after :attr:`retry_after` seconds."""

    def __init__(self, retry_after: int):
        super().__init__(f"the queue is full; retry after {retry_after} s")
        self.retry_after = retry_after


@dataclass
class _Waiting:
    image: Image.Image
    result: asyncio.Future


class MicroBatcher:
    """Runs ``run`` (RGB images -> ``[B, n_leaves]`` probabilities) on batches of queued photos.

    Args:
        run: the model; called in a worker thread with 1..``max_batch`` images.
        max_batch: photos per batch at most (1: every photo alone, micro-batching off).
        max_wait: seconds the first photo of a batch waits for more.
        max_queue: photos waiting at most.
        workers: batches run at once.
        on_batch: called with each batch's size and seconds (metrics).
    """

    def __init__(self, run: Callable[[list[Image.Image]], torch.Tensor], max_batch: int, max_wait: float,
                 max_queue: int, workers: int = 1, on_batch: Callable[[int, float], None] | None = None):
        self.run, self.max_batch, self.max_wait, self.max_queue = run, max_batch, max_wait, max_queue
        self.workers, self.on_batch = workers, on_batch
        self._queue: asyncio.Queue[_Waiting] | None = None
        self._tasks: list[asyncio.Task] = []
        self._executor: ThreadPoolExecutor | None = None
        self._seconds_per_batch = 0.0  # of the last batch: the Retry-After estimate

    @property
    def depth(self) -> int:
        """Photos waiting (not yet in a running batch)."""
        return self._queue.qsize() if self._queue is not None else 0

    async def start(self) -> None:
        """Start the workers (in the running event loop)."""
        self._queue = asyncio.Queue()
        self._executor = ThreadPoolExecutor(self.workers, thread_name_prefix="taxonlens-batch")
        self._tasks = [asyncio.create_task(self._work()) for _ in range(self.workers)]

    async def stop(self) -> None:
        """Stop the workers; photos still waiting get a cancelled result."""
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        while self._queue is not None and not self._queue.empty():
            self._queue.get_nowait().result.cancel()
        if self._executor is not None:
            self._executor.shutdown(wait=True)

    async def submit(self, images: Sequence[Image.Image]) -> torch.Tensor:
        """``[len(images), n_leaves]`` probabilities, computed with whatever else is waiting.

        Raises:
            QueueFull: the photos do not fit in the queue now.
        """
        if self._queue is None:
            raise RuntimeError("MicroBatcher.start() has not run")
        if self.depth + len(images) > self.max_queue:
            batches = math.ceil((self.depth + len(images)) / (self.max_batch * self.workers))
            raise QueueFull(max(1, math.ceil(batches * self._seconds_per_batch)))
        loop = asyncio.get_running_loop()
        waiting = [_Waiting(img, loop.create_future()) for img in images]
        for w in waiting:
            self._queue.put_nowait(w)
        return torch.stack(await asyncio.gather(*(w.result for w in waiting)))

    async def _next_batch(self) -> list[_Waiting]:
        """The first waiting photo and up to ``max_batch - 1`` more, waiting at most ``max_wait`` for them."""
        queue = self._queue
        batch = [await queue.get()]
        deadline = time.monotonic() + self.max_wait
        while len(batch) < self.max_batch:
            if not queue.empty():
                batch.append(queue.get_nowait())
                continue
            left = deadline - time.monotonic()
            if left <= 0:
                break
            try:
                batch.append(await asyncio.wait_for(queue.get(), left))
            except TimeoutError:
                break
        return [w for w in batch if not w.result.done()]  # a request that went away needs no answer

    async def _work(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            batch = await self._next_batch()
            if not batch:
                continue
            start = time.perf_counter()
            try:
                probs = await loop.run_in_executor(self._executor, self.run, [w.image for w in batch])
            except Exception as e:  # noqa: BLE001 - every waiting request gets the model's error
                for w in batch:
                    if not w.result.done():
                        w.result.set_exception(e)
                continue
            self._seconds_per_batch = time.perf_counter() - start
            if self.on_batch is not None:
                self.on_batch(len(batch), self._seconds_per_batch)
            for w, row in zip(batch, probs):
                if not w.result.done():
                    w.result.set_result(row)
