"""``train.loss_average``: the cross-entropy averaged over labelled pixels (transeg's default) or over
all pixels, ignored ones included (MMSegmentation's ``avg_non_ignore=False``, the papers' recipes):
values and gradients on hand-checkable tensors, the global-batch divisor under DDP, and the recipes."""

from __future__ import annotations

import math
import os
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from transeg.engine.distributed import DistInfo
from transeg.engine.loss_spec import build_loss
from transeg.engine.losses import global_loss_divisor, loss_divisor, segmentation_loss
from transeg.engine.recipe import load_config, parse_config
from transeg.errors import TransegError
from transeg.models.outputs import SegOutput

CONFIGS = Path(__file__).resolve().parents[2] / "configs"

# one image of 1 x 4 pixels, 2 classes: labels 0, 1, ignored, ignored
LABELS = torch.tensor([[[0, 1, 255, 255]]])
LOGITS = torch.tensor([[[[2.0, 0.0, 5.0, -3.0]], [[0.0, 0.0, 1.0, 4.0]]]])  # (1, 2, 1, 4)
CE0, CE1 = math.log(1 + math.exp(-2)), math.log(2)  # -log softmax at the true class


@pytest.mark.parametrize(("average", "pixels"), [("labelled", 2), ("all", 4)])
def test_value_and_gradient_by_hand(average, pixels):
    logits = LOGITS.clone().requires_grad_(True)
    loss = segmentation_loss(logits, LABELS, count=loss_divisor(LABELS, average))
    assert loss.item() == pytest.approx((CE0 + CE1) / pixels, rel=1e-6)
    loss.backward()
    s = 1 / (1 + math.exp(-2))  # softmax([2, 0])[0]
    expected = torch.tensor([[[[s - 1, 0.5, 0.0, 0.0]], [[1 - s, -0.5, 0.0, 0.0]]]]) / pixels
    torch.testing.assert_close(logits.grad, expected, rtol=1e-6, atol=1e-7)


def test_all_pixels_equals_mmsegmentation_mean():
    """MMSegmentation: ``F.cross_entropy(reduction='none', ignore_index=255)`` then ``.mean()``."""
    gen = torch.Generator().manual_seed(0)
    logits = torch.randn(2, 5, 8, 6, generator=gen)
    labels = torch.randint(0, 5, (2, 8, 6), generator=gen)
    labels[0, :3] = 255
    reference = torch.nn.functional.cross_entropy(logits, labels, reduction="none", ignore_index=255).mean()
    got = segmentation_loss(logits, labels, count=loss_divisor(labels, "all"))
    torch.testing.assert_close(got, reference, rtol=1e-6, atol=0)
    assert got < segmentation_loss(logits, labels)  # the labelled average is larger


def test_aux_losses_use_the_same_divisor():
    out = SegOutput(LOGITS, {"attn": LOGITS.flip(1)}, {"attn": 0.4})
    loss, parts = build_loss(average="all").with_parts(out, LABELS)
    flipped = (math.log(1 + math.exp(2)) + CE1) / 4
    assert parts["loss_seg"].item() == pytest.approx((CE0 + CE1) / 4, rel=1e-6)
    assert parts["loss_attn"].item() == pytest.approx(flipped, rel=1e-6)
    assert loss.item() == pytest.approx((CE0 + CE1) / 4 + 0.4 * flipped, rel=1e-6)


def _ddp_worker(rank: int, average: str, port: int, out_dir: str) -> None:
    """One of two processes: its half of the batch, the trainer's divisor, DDP's gradient averaging."""
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=2)
    x, labels, conv = _ddp_problem()
    half = slice(rank * 2, rank * 2 + 2)
    count = global_loss_divisor(labels[half], average, DistInfo(rank=rank, world_size=2))
    loss = segmentation_loss(conv(x[half]), labels[half], count=count)
    loss.backward()
    grad = conv.weight.grad.clone()
    dist.all_reduce(grad)
    grad /= 2  # what DDP does
    dist.all_reduce(loss.detach())
    if rank == 0:
        torch.save({"grad": grad, "loss": loss.detach() / 2}, Path(out_dir) / f"{average}.pt")
    dist.destroy_process_group()


def _ddp_problem() -> tuple[torch.Tensor, torch.Tensor, torch.nn.Conv2d]:
    """A batch of 4 whose halves have very different shares of ignored pixels, and a 1x1 conv."""
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(4, 3, 6, 5, generator=gen)
    labels = torch.randint(0, 4, (4, 6, 5), generator=gen)
    labels[:2, 1:] = 255  # first half: mostly ignored
    labels[3, 0, 0] = 255
    conv = torch.nn.Conv2d(3, 4, 1)
    with torch.no_grad():
        conv.weight.copy_(torch.randn(conv.weight.shape, generator=gen))
        conv.bias.copy_(torch.randn(conv.bias.shape, generator=gen))
    return x, labels, conv


@pytest.mark.parametrize("average", ["labelled", "all"])
def test_two_processes_give_the_global_batch_average(tmp_path, average):
    x, labels, conv = _ddp_problem()
    loss = segmentation_loss(conv(x), labels, count=loss_divisor(labels, average))
    loss.backward()
    port = 29600 + (os.getpid() % 200) + (0 if average == "labelled" else 1)
    mp.spawn(_ddp_worker, args=(average, port, str(tmp_path)), nprocs=2, join=True)
    result = torch.load(tmp_path / f"{average}.pt")
    torch.testing.assert_close(result["grad"], conv.weight.grad, rtol=1e-5, atol=1e-7)
    torch.testing.assert_close(result["loss"], loss.detach(), rtol=1e-5, atol=0)


def test_config_option():
    data = {"data": {"dataset": "ade20k", "root": "x"}}
    assert parse_config(data).train.loss_average == "labelled"
    assert parse_config({**data, "train": {"loss_average": "all"}}).train.loss_average == "all"
    with pytest.raises(TransegError, match=r"train\.loss_average.*'mean'"):
        parse_config({**data, "train": {"loss_average": "mean"}})


@pytest.mark.parametrize("path", sorted((CONFIGS / "segformer").glob("*.yaml")) +
                         sorted((CONFIGS / "segdeformer").glob("*.yaml")), ids=lambda p: p.stem)
def test_the_papers_recipes_average_over_all_pixels(path):
    """SegFormer and SegDeformer trained with MMSegmentation's loss; the CPU recipes keep transeg's."""
    expected = "labelled" if "camvid" in path.stem else "all"
    assert load_config(path).train.loss_average == expected
