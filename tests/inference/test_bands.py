"""Band-by-band slide inference: the same logits as one whole-image canvas, with memory bounded by
the window row, and TIFFs (any size, bands, GeoTIFF tags) segmented into TIFF label maps."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import transeg
from transeg.inference.modes import Predictor, normalize, padded_forward, slide_bands, slide_logits

tifffile = pytest.importorskip("tifffile")


def reference_slide(model, x, crop, stride):
    """The whole-image formulation (mmseg ``slide_inference``): one (B, K, H, W) canvas of logit sums
    and a window count, each window's logits resized to it and added, then divided."""
    (hc, wc), (hs, ws) = crop, stride
    b, h, w = x.shape[0], x.shape[-2], x.shape[-1]
    total, count = None, torch.zeros((1, 1, h, w))
    for i in range(max(h - hc + hs - 1, 0) // hs + 1):
        for j in range(max(w - wc + ws - 1, 0) // ws + 1):
            y2, x2 = min(i * hs + hc, h), min(j * ws + wc, w)
            y1, x1 = max(y2 - hc, 0), max(x2 - wc, 0)
            out = torch.nn.functional.interpolate(padded_forward(model, x[:, :, y1:y2, x1:x2]),
                                                  (y2 - y1, x2 - x1), mode="bilinear", align_corners=False)
            total = out.new_zeros((b, out.shape[1], h, w)) if total is None else total
            total[:, :, y1:y2, x1:x2] += out
            count[:, :, y1:y2, x1:x2] += 1
    return total / count


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return transeg.create_model("segformer-b0", num_classes=5).eval()


@pytest.mark.parametrize(("size", "crop", "stride"), [
    ((97, 75), (32, 32), (24, 20)),   # last windows shifted inward on both axes
    ((64, 40), (64, 48), (32, 16)),   # a crop taller than... exactly the image, wider than it
    ((150, 33), (40, 33), (13, 33)),  # stride well below the crop: up to four windows overlap a row
])
def test_bands_equal_the_whole_canvas(model, size, crop, stride):
    x = torch.randn(1, 3, *size, generator=torch.Generator().manual_seed(1))
    with torch.inference_mode():
        expected = reference_slide(model, x, crop, stride)
        got = slide_logits(model, x, crop, stride, batch_size=1)  # one window per forward, as the reference
    assert got.shape == expected.shape
    torch.testing.assert_close(got, expected, rtol=0, atol=0)  # same sums in the same order: bit-exact


def test_batched_windows_give_the_same_labels(model):
    image = np.random.default_rng(2).integers(0, 256, (90, 130, 3), dtype=np.uint8)
    x = normalize(image, model.config.mean, model.config.std)
    with torch.inference_mode():
        expected = reference_slide(model, x, (32, 32), (24, 24))
    labels = Predictor(model, mode="slide", crop=32, stride=24, batch_size=4).predict(image)
    ref = expected.argmax(1)[0].numpy()
    ties = (expected.topk(2, dim=1).values.diff(dim=1).abs()[0, 0] < 1e-5).numpy()
    assert (labels == ref)[~ties].all()  # a batch of 4 may differ from single windows in the last ulp
    assert (labels != ref).mean() < 1e-3


def test_memory_follows_the_window_row_not_the_height():
    """Each read asks for one window row; a band is finished (yielded) before rows below it are read."""
    events: list[tuple[str, int, int]] = []
    h, w, crop, stride = 200, 50, (40, 40), (30, 30)

    def rows(y1: int, y2: int) -> torch.Tensor:
        events.append(("read", y1, y2))
        return torch.zeros(1, 3, y2 - y1, w)

    def model(x: torch.Tensor) -> torch.Tensor:
        return torch.zeros(x.shape[0], 2, x.shape[2] // 4, x.shape[3] // 4)

    y = 0
    for top, band in slide_bands(model, rows, (h, w), crop, stride, batch_size=2):
        assert top == y and band.shape[2] <= crop[0] and band.shape[3] == w
        events.append(("band", top, top + band.shape[2]))
        y += band.shape[2]
    assert y == h
    reads = [e for e in events if e[0] == "read"]
    assert all(y2 - y1 == crop[0] for _, y1, y2 in reads)
    for i, event in enumerate(events):  # no band is held back: it comes right after the read that finishes it
        if event[0] == "band":
            assert events[i - 1][0] == "read" and all(e[1] >= event[2] for e in events[i + 1:] if e[0] == "read")
