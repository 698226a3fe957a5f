"""Dice and Lovász at ``points`` drawn pixels: the drawn logits are the full-resolution upsample's,
drawing every pixel gives the full loss, and the draw is uniform over labelled pixels."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from transeg.engine.loss_spec import build_loss, parse_loss_spec
from transeg.engine.region_losses import sample_pixels
from transeg.errors import TransegError

GEN = torch.Generator().manual_seed(3)
LOGITS = torch.randn(2, 4, 5, 7, generator=GEN)  # (B, K, h, w), upsampled to the labels' 17 x 23
LABELS = torch.randint(0, 4, (2, 17, 23), generator=GEN)
LABELS[0, :6] = 255
LABELS[1, 3, 4:9] = 255


def _full_rows(logits: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    z = F.interpolate(logits, size=labels.shape[-2:], mode="bilinear", align_corners=False)
    valid = labels != 255
    return z.permute(0, 2, 3, 1)[valid], labels[valid]


def test_drawn_logits_are_the_upsampled_logits_of_labelled_pixels():
    torch.manual_seed(0)
    rows, labels = sample_pixels(LOGITS, LABELS, points=50)
    assert rows.shape == (100, 4) and labels.shape == (100,)
    full, full_labels = _full_rows(LOGITS, LABELS)
    distance = torch.cdist(rows, full, compute_mode="donot_use_mm_for_euclid_dist")  # (100, N)
    distance[labels[:, None] != full_labels[None]] = float("inf")
    assert distance.min(1).values.max() < 1e-5  # each drawn row is a full-resolution row of its label


def test_pixels_are_drawn_without_replacement():
    """Logits at the labels' resolution, channel 0 naming the pixel: 60 distinct labelled pixels per image."""
    logits = torch.arange(17 * 23.0).reshape(1, 1, 17, 23).repeat(2, 2, 1, 1)
    rows, _ = sample_pixels(logits, LABELS, points=60)
    pixels = rows[:, 0].round().long().reshape(2, 60)
    for image in range(2):
        assert pixels[image].unique().numel() == 60
        assert torch.all(LABELS[image].flatten()[pixels[image]] != 255)


def test_an_image_with_fewer_labelled_pixels_gives_all_of_them():
    labelled = (LABELS != 255).flatten(1).sum(1)  # (B,)
    rows, labels = sample_pixels(LOGITS, LABELS, points=int(labelled[0]) + 10)
    count = int(labelled[0]) + min(int(labelled[0]) + 10, int(labelled[1]))
    assert rows.shape == (count, 4) and labels.shape == (count,)
    assert 255 not in labels.tolist()


@pytest.mark.parametrize("term", [{"type": "dice", "smooth": 1.0}, {"type": "lovasz"}])
def test_drawing_every_pixel_gives_the_full_loss_and_gradient(term):
    values, grads = [], []
    for spec in (term, {**term, "points": 17 * 23}):
        torch.manual_seed(1)
        z = LOGITS.clone().requires_grad_(True)
        value = build_loss([spec])(z, LABELS)
        value.backward()
        values.append(value.detach())
        grads.append(z.grad)
    torch.testing.assert_close(values[1], values[0], rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(grads[1], grads[0], rtol=1e-4, atol=1e-6)


def test_the_draw_is_uniform_over_labelled_pixels():
    """One pixel per draw from a 1 x 6 image with one pixel ignored: each of the five labelled pixels
    about 1/5 of 5000 draws, the ignored one never. Channel 0 of the logits names the pixel."""
    logits = torch.arange(6.0).reshape(1, 1, 1, 6).repeat(1, 2, 1, 1)
    labels = torch.zeros(1, 1, 6, dtype=torch.long)
    labels[0, 0, 2] = 255
    torch.manual_seed(2)
    drawn = torch.cat([sample_pixels(logits, labels, points=1)[0][:, 0] for _ in range(5000)])
    counts = torch.bincount(drawn.round().long(), minlength=6)
    assert counts[2] == 0
    assert all(abs(int(counts[i]) - 1000) < 150 for i in (0, 1, 3, 4, 5)), counts


def test_points_must_be_positive():
    assert parse_loss_spec([{"type": "lovasz", "points": 4096}])[0].points == 4096
    with pytest.raises(TransegError, match=r"^loss\.0\.dice\.points: "):
        parse_loss_spec([{"type": "dice", "points": 0}])
