"""The micro-batcher and the service's refusals: size groups, batches of concurrent requests, a full
queue (503) and a timeout (504) answered in one JSON line."""

from __future__ import annotations

import asyncio
import io
import threading
import time

import numpy as np
import torch
from fastapi.testclient import TestClient
from PIL import Image

import transeg
from transeg.inference.backends import BackendModule
from transeg.serve.app import Limits, create_app
from transeg.serve.batching import MicroBatcher, QueueFull, size_groups


def _image(h: int, w: int) -> np.ndarray:
    return np.zeros((h, w, 3), np.uint8)


def test_size_groups_keep_order_split_by_size_and_pixel_budget():
    images = [_image(4, 4), _image(2, 8), _image(4, 4), _image(4, 4), _image(2, 8)]
    assert size_groups(images, max_pixels=1000) == [[0, 2, 3], [1, 4]]
    assert size_groups(images, max_pixels=32) == [[0, 2], [3], [1, 4]]
    assert size_groups([_image(64, 64)], max_pixels=10) == [[0]]


def test_concurrent_submissions_share_batches_and_get_their_own_outputs():
    calls: list[int] = []

    def run(batch: list[np.ndarray]) -> list[np.ndarray]:
        calls.append(len(batch))
        return [image[..., 0].copy() for image in batch]

    async def main() -> list[np.ndarray]:
        batcher = MicroBatcher(run, max_batch=4, window_s=0.05)
        await batcher.start()
        images = [np.full((3 + i % 2, 5, 3), i, np.uint8) for i in range(8)]
        outputs = await asyncio.gather(*(batcher.submit(image) for image in images))
        await batcher.stop()
        assert batcher.stats.images == 8 and batcher.stats.largest == max(calls) > 1
        return outputs

    outputs = asyncio.run(main())
    assert [int(out[0, 0]) for out in outputs] == list(range(8))
    assert [out.shape for out in outputs] == [(3 + i % 2, 5) for i in range(8)]


def test_a_full_queue_is_refused():
    release = threading.Event()

    def run(batch: list[np.ndarray]) -> list[np.ndarray]:
        release.wait(5)
        return [image[..., 0] for image in batch]

    async def main() -> None:
        batcher = MicroBatcher(run, max_batch=1, window_s=0.0, queue_size=2)
        await batcher.start()
        waiting = [asyncio.create_task(batcher.submit(_image(2, 2))) for _ in range(2)]
        await asyncio.sleep(0.05)
        try:
            await batcher.submit(_image(2, 2))
            raise AssertionError("a third request was queued")
        except QueueFull as exc:
            assert "2 requests waiting" in str(exc)
        release.set()
        await asyncio.gather(*waiting)
        await batcher.stop()

    asyncio.run(main())


class _Slow(BackendModule):
    """segformer-b0 that takes ``delay`` seconds more per call: a model slower than the timeout."""

    def __init__(self, delay: float) -> None:
        model = transeg.create_model("segformer-b0", num_classes=3).eval()
        super().__init__(model.config, model.min_input_size)
        self.model, self.delay = model, delay

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        time.sleep(self.delay)
        return self.model(x)


def _png() -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(np.zeros((32, 32, 3), np.uint8)).save(buffer, format="PNG")
    return buffer.getvalue()


def test_past_the_timeout_a_request_gets_504_and_the_queue_503():
    limits = Limits(timeout_s=0.3, queue_size=1, batch_window_ms=0)
    with TestClient(create_app(_Slow(1.0), "segformer-b0", limits=limits)) as client:
        results: dict[str, object] = {}
        first = threading.Thread(target=lambda: results.setdefault("first", client.post("/predict", content=_png())))
        first.start()
        time.sleep(0.1)
        full = client.post("/predict", content=_png())
        first.join()
        assert full.status_code == 503 and "queue is full" in full.json()["error"]
        late = results["first"]
        assert late.status_code == 504 and late.json() == {"error": "no answer within the timeout of 0.3 s"}
        assert client.get("/health").json()["status"] == "ok"
