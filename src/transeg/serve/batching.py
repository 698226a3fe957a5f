"""Micro-batching: concurrent requests gathered for a few milliseconds into one model call.

Requests wait in a bounded queue; one worker takes the first, gathers more for ``window_s`` (up to
``max_batch``), groups them by image size (no padding: padding would change what global attention
sees, and so the labels) and runs each group as one batch in a worker thread, off the event loop.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np


class QueueFull(Exception):
    """The queue already holds ``queue_size`` requests."""


@dataclass
class _Job:
    image: np.ndarray
    future: asyncio.Future[np.ndarray]


@dataclass
class BatchStats:
    """What the batcher has done: model calls, images, the largest batch, the batch-size histogram."""

    batches: int = 0
    images: int = 0
    largest: int = 0
    sizes: dict[int, int] = field(default_factory=dict)

    def record(self, size: int) -> None:
        self.batches += 1
        self.images += size
        self.largest = max(self.largest, size)
        self.sizes[size] = self.sizes.get(size, 0) + 1


def size_groups(images: Sequence[np.ndarray], max_pixels: int) -> list[list[int]]:
    """Indices of ``images`` grouped by (H, W) in order of first appearance, each group split so
    that it holds at most ``max_pixels`` pixels (and at least one image)."""
    by_size: dict[tuple[int, int], list[int]] = {}
    for i, image in enumerate(images):
        by_size.setdefault(image.shape[:2], []).append(i)
    groups = []
    for (h, w), indices in by_size.items():
        step = max(1, max_pixels // max(h * w, 1))
        groups += [indices[start:start + step] for start in range(0, len(indices), step)]
    return groups


class MicroBatcher:
    """``await submit(image)`` -> ``run_batch([image, ...])``'s output for that image.

    ``run_batch`` maps a list of same-size (H, W, 3) uint8 images to one output per image; it runs
    in one worker thread, so the model sees one batch at a time.
    """

    def __init__(self, run_batch: Callable[[list[np.ndarray]], list[np.ndarray]], max_batch: int = 8,
                 window_s: float = 0.005, queue_size: int = 64, max_batch_pixels: int = 8 * 512 * 512) -> None:
        self.run_batch = run_batch
        self.max_batch, self.window_s = max_batch, window_s
        self.queue_size, self.max_batch_pixels = queue_size, max_batch_pixels
        self.stats = BatchStats()
        self.waiting = 0
        self._queue: asyncio.Queue[_Job] | None = None
        self._worker: asyncio.Task[None] | None = None
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="transeg-model")

    async def start(self) -> None:
        """Start the worker on the running event loop."""
        self._queue = asyncio.Queue()
        self._worker = asyncio.create_task(self._work())

    async def stop(self) -> None:
        """Stop the worker and its thread."""
        if self._worker is not None:
            self._worker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._worker
        self._executor.shutdown(wait=True)

    async def submit(self, image: np.ndarray) -> np.ndarray:
        """The output for ``image``; ``QueueFull`` when ``queue_size`` requests already wait."""
        if self._queue is None:
            raise RuntimeError("the batcher is not started")
        if self.waiting >= self.queue_size:
            raise QueueFull(f"the queue is full ({self.queue_size} requests waiting)")
        job = _Job(image, asyncio.get_running_loop().create_future())
        self.waiting += 1
        try:
            self._queue.put_nowait(job)
            return await job.future
        finally:
            self.waiting -= 1

    async def _gather(self) -> list[_Job]:
        """The next batch: the first waiting job and those arriving within the window."""
        assert self._queue is not None
        jobs = [await self._queue.get()]
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.window_s
        while len(jobs) < self.max_batch:
            if not self._queue.empty():
                jobs.append(self._queue.get_nowait())
                continue
            left = deadline - loop.time()
            if left <= 0:
                break
            try:
                jobs.append(await asyncio.wait_for(self._queue.get(), left))
            except TimeoutError:
                break
        return [job for job in jobs if not job.future.done()]  # those timed out are dropped

    async def _work(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            jobs = await self._gather()
            for group in size_groups([job.image for job in jobs], self.max_batch_pixels):
                batch = [jobs[i] for i in group]
                try:
                    outputs = await loop.run_in_executor(self._executor, self.run_batch, [j.image for j in batch])
                except Exception as exc:  # handed to each waiting request, which answers for itself
                    for job in batch:
                        if not job.future.done():
                            job.future.set_exception(exc)
                    continue
                self.stats.record(len(batch))
                for job, output in zip(batch, outputs, strict=True):
                    if not job.future.done():
                        job.future.set_result(output)
