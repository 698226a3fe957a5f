"""The chunked, fused cross-entropy equals the reference formulation (upsample whole, log_softmax,
NLL ignoring 255) in value and in the gradient w.r.t. the low-resolution logits."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from transeg.engine.fused_ce import chunked_cross_entropy
from transeg.engine.loss_spec import build_loss
from transeg.engine.losses import loss_divisor, segmentation_loss


def reference(logits: torch.Tensor, labels: torch.Tensor, divisor: torch.Tensor,
              weight: torch.Tensor | None = None) -> torch.Tensor:
    """The whole-image formulation, in float64."""
    z = F.interpolate(logits.double(), size=labels.shape[-2:], mode="bilinear", align_corners=False)
    w = None if weight is None else weight.double()
    return F.cross_entropy(z, labels, weight=w, ignore_index=255, reduction="sum") / divisor.clamp(min=1)


def case(batch: int, classes: int, low: tuple[int, int], high: tuple[int, int], seed: int = 0):
    gen = torch.Generator().manual_seed(seed)
    logits = (3 * torch.randn(batch, classes, *low, generator=gen)).requires_grad_()
    labels = torch.randint(0, classes, (batch, *high), generator=gen)
    labels[torch.rand(batch, *high, generator=gen) < 0.2] = 255
    return logits, labels


def value_and_grad(fn, logits: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    value = fn(logits)
    return value.detach(), torch.autograd.grad(value, logits)[0]


@pytest.mark.parametrize(("classes", "low", "high", "chunk"), [
    (19, (16, 16), (64, 64), 32),  # the SegFormer 4x, several chunks
    (7, (9, 13), (37, 50), 5),  # non-integer scales, a ragged last chunk
    (5, (12, 12), (12, 12), 4),  # no resize
    (4, (20, 24), (10, 12), 3),  # downsampling
    (2, (1, 7), (6, 19), 4),  # one input row
])
@pytest.mark.parametrize("weighted", [False, True])
def test_value_and_gradient_match_the_reference(classes, low, high, chunk, weighted) -> None:
    logits, labels = case(2, classes, low, high)
    weight = torch.rand(classes, generator=torch.Generator().manual_seed(1)) + 0.25 if weighted else None
    divisor = loss_divisor(labels, "labelled")
    got, got_grad = value_and_grad(lambda z: chunked_cross_entropy(z, labels, divisor, weight, chunk_rows=chunk),
                                   logits)
    want, want_grad = value_and_grad(lambda z: reference(z, labels, divisor, weight), logits)
    assert got.dtype == torch.float32
    torch.testing.assert_close(got.double(), want, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(got_grad.double(), want_grad.double(), rtol=1e-4, atol=1e-7)


@pytest.mark.parametrize("weighted", [False, True])
def test_confidently_wrong_pixels_keep_their_exact_loss(weighted) -> None:
    """Logits with gaps of hundreds: the softmax of many targets underflows to 0 in fp32 (log would be
    -inf) or keeps few digits; their loss is log_softmax's, and value and gradient stay the reference's."""
    logits, labels = case(2, 6, (8, 8), (32, 32), seed=5)
    logits = (60 * logits.detach()).requires_grad_()
    weight = torch.tensor([0.5, 1, 2, 1, 3, 1.5]) if weighted else None
    divisor = loss_divisor(labels, "labelled")
    with torch.no_grad():
        up = F.interpolate(logits, size=labels.shape[-2:], mode="bilinear", align_corners=False)
        target_prob = up.softmax(1).gather(1, labels.clamp(max=5)[:, None])[:, 0][labels != 255]
    assert (target_prob == 0).sum() > 100 and ((target_prob > 0) & (target_prob < 1e-30)).any()
    got, got_grad = value_and_grad(lambda z: chunked_cross_entropy(z, labels, divisor, weight, chunk_rows=8), logits)
    want, want_grad = value_and_grad(lambda z: reference(z, labels, divisor, weight), logits)
    assert torch.isfinite(got)
    torch.testing.assert_close(got.double(), want, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(got_grad.double(), want_grad.double(), rtol=1e-4, atol=1e-7)


def test_chunk_size_does_not_change_the_result() -> None:
    logits, labels = case(1, 6, (10, 10), (40, 40), seed=3)
    divisor = loss_divisor(labels, "all")
    results = [value_and_grad(lambda z, c=c: chunked_cross_entropy(z, labels, divisor, chunk_rows=c), logits)
               for c in (1, 7, 40, 1000)]
    for value, grad in results[1:]:
        torch.testing.assert_close(value, results[0][0])
        torch.testing.assert_close(grad, results[0][1])


def test_default_loss_is_the_chunked_one_with_its_divisors() -> None:
    """segmentation_loss and the default SegLoss (no loss list), 'labelled' and 'all' averaging,
    equal the reference; the upstream gradient scales the result."""
    logits, labels = case(2, 11, (8, 8), (32, 32), seed=4)
    for average in ("labelled", "all"):
        divisor = loss_divisor(labels, average)
        want, want_grad = value_and_grad(lambda z, d=divisor: 3 * reference(z, labels, d), logits)
        got, got_grad = value_and_grad(lambda z, a=average: 3 * build_loss(average=a)(z, labels), logits)
        torch.testing.assert_close(got.double(), want, rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(got_grad.double(), want_grad.double(), rtol=1e-4, atol=1e-7)
    got = segmentation_loss(logits, labels)
    torch.testing.assert_close(got.double(), reference(logits, labels, loss_divisor(labels)), rtol=1e-5, atol=1e-6)


def test_class_weighted_term_uses_it() -> None:
    logits, labels = case(2, 4, (8, 8), (32, 32), seed=5)
    weights = (0.5, 1.0, 2.0, 4.0)
    loss = build_loss([{"type": "cross_entropy", "class_weight": list(weights)}])
    got, got_grad = value_and_grad(lambda z: loss(z, labels), logits)
    want, want_grad = value_and_grad(lambda z: reference(z, labels, loss_divisor(labels), torch.tensor(weights)),
                                     logits)
    torch.testing.assert_close(got.double(), want, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(got_grad.double(), want_grad.double(), rtol=1e-4, atol=1e-7)


def test_no_labelled_pixel_gives_zero_with_a_gradient_path() -> None:
    logits = torch.randn(1, 3, 4, 4, requires_grad=True)
    labels = torch.full((1, 16, 16), 255)
    loss = segmentation_loss(logits, labels)
    loss.backward()
    assert loss.item() == 0.0
    assert torch.equal(logits.grad, torch.zeros_like(logits))


def test_bf16_logits_get_a_bf16_gradient_and_no_grad_logits_a_value() -> None:
    logits, labels = case(1, 5, (8, 8), (32, 32), seed=6)
    divisor = loss_divisor(labels)
    half = logits.detach().bfloat16().requires_grad_()
    value, grad = value_and_grad(lambda z: chunked_cross_entropy(z, labels, divisor), half)
    want, want_grad = value_and_grad(lambda z: reference(z.float(), labels, divisor), half)
    assert grad.dtype == torch.bfloat16
    with torch.autocast("cpu", torch.bfloat16):  # the loss stays fp32 inside a bf16 autocast region
        autocast_value = chunked_cross_entropy(half, labels, divisor)
    torch.testing.assert_close(autocast_value.double(), want, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(value.double(), want, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(grad.double(), want_grad.double(), rtol=1e-2, atol=1e-4)
    with torch.no_grad():
        torch.testing.assert_close(chunked_cross_entropy(logits, labels, divisor).double(),
                                   reference(logits, labels, divisor), rtol=1e-5, atol=1e-6)
