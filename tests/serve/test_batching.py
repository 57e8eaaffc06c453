"""Micro-batching: concurrent photos are run together, up to the batch size; the queue is bounded."""

from __future__ import annotations

import asyncio

import pytest
import torch
from PIL import Image

from taxonlens.serve.batching import MicroBatcher, QueueFull


def _images(n: int) -> list[Image.Image]:
    return [Image.new("RGB", (4, 4), (i, 0, 0)) for i in range(n)]


def _run_recording(sizes: list[int]):
    def run(images):
        sizes.append(len(images))
        return torch.tensor([[float(img.getpixel((0, 0))[0]), 1.0] for img in images])  # [B, 2]: the photo's red
    return run


async def _submit_all(batcher: MicroBatcher, requests: list[list[Image.Image]]) -> list[torch.Tensor]:
    await batcher.start()
    try:
        return await asyncio.gather(*(batcher.submit(r) for r in requests))
    finally:
        await batcher.stop()


@pytest.mark.parametrize(("max_batch", "expected"), [(8, [7]), (3, [3, 3, 1]), (1, [1] * 7)])
def test_concurrent_photos_are_run_together_up_to_the_batch_size(max_batch, expected):
    sizes: list[int] = []
    batcher = MicroBatcher(_run_recording(sizes), max_batch=max_batch, max_wait=0.2, max_queue=64)
    requests = [_images(3), _images(1), _images(3)]
    out = asyncio.run(_submit_all(batcher, requests))
    assert sizes == expected
    # each request gets the rows of its own photos, in order
    assert [o[:, 0].tolist() for o in out] == [[0.0, 1.0, 2.0], [0.0], [0.0, 1.0, 2.0]]


def test_the_queue_is_bounded():
    async def scenario():
        release = asyncio.Event()
        loop = asyncio.get_running_loop()

        def run(images):
            asyncio.run_coroutine_threadsafe(release.wait(), loop).result(10)
            return torch.zeros(len(images), 2)

        batcher = MicroBatcher(run, max_batch=2, max_wait=0, max_queue=3)
        await batcher.start()
        running = asyncio.create_task(batcher.submit(_images(2)))  # taken into the first batch
        await asyncio.sleep(0.05)
        queued = asyncio.create_task(batcher.submit(_images(3)))  # fills the queue
        await asyncio.sleep(0.05)
        assert batcher.depth == 3
        with pytest.raises(QueueFull) as refused:
            await batcher.submit(_images(1))
        assert refused.value.retry_after >= 1
        release.set()
        assert (await running).shape == (2, 2) and (await queued).shape == (3, 2)
        assert batcher.depth == 0
        await batcher.stop()

    asyncio.run(scenario())


def test_a_model_error_reaches_every_waiting_request_and_the_worker_lives_on():
    calls = []

    def run(images):
        calls.append(len(images))
        if len(calls) == 1:
            raise RuntimeError("model failed")
        return torch.zeros(len(images), 2)

    async def scenario():
        batcher = MicroBatcher(run, max_batch=4, max_wait=0.05, max_queue=8)
        await batcher.start()
        first = await asyncio.gather(batcher.submit(_images(2)), batcher.submit(_images(1)), return_exceptions=True)
        second = await batcher.submit(_images(1))
        await batcher.stop()
        return first, second

    first, second = asyncio.run(scenario())
    assert all(isinstance(e, RuntimeError) for e in first) and second.shape == (1, 2)
