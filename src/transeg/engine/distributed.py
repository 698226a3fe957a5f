"""torch.distributed helpers: process-group set-up under ``torchrun`` and synchronised BatchNorm."""

from __future__ import annotations

import os
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import torch
import torch.distributed as dist
import torch.distributed.nn.functional as dist_fn
from torch import nn


@dataclass(frozen=True)
class DistInfo:
    rank: int = 0
    world_size: int = 1
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def init_distributed(device: str | None = None) -> DistInfo:
    """Join the process group ``torchrun`` describes (gloo on CPU, nccl on GPU); one process otherwise.

    ``device``: cpu, cuda, cuda:N or mps; None: CUDA when this machine has it. Under torchrun a CUDA
    process takes the GPU of its ``LOCAL_RANK``; alone it takes ``cuda:N`` as given (``cuda``: GPU 0).
    """
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    requested = torch.device(device) if device is not None else None
    cuda = requested.type == "cuda" if requested is not None else torch.cuda.is_available()
    if cuda:
        index = local_rank if world_size > 1 or requested is None else (requested.index or 0)
        device = torch.device("cuda", index)
        torch.cuda.set_device(device)
    else:
        device = requested or torch.device("cpu")
    if world_size == 1:
        return DistInfo(device=device)
    if not dist.is_initialized():
        dist.init_process_group("nccl" if cuda else "gloo")
    return DistInfo(rank=dist.get_rank(), world_size=dist.get_world_size(), device=device)


@contextmanager
def distributed_job(device: str | None = None) -> Iterator[DistInfo]:
    """``init_distributed(device)`` for one command, leaving the process group it joined on exit."""
    joined = not dist.is_initialized()
    info = init_distributed(device)
    try:
        yield info
    finally:
        if joined and dist.is_initialized():
            dist.destroy_process_group()


def all_reduce_count(count: int, info: DistInfo) -> int:
    """``count`` summed over the processes (as is when there is one)."""
    if not info.distributed:
        return count
    total = torch.tensor([count], dtype=torch.int64,
                         device=info.device if dist.get_backend() == "nccl" else "cpu")
    dist.all_reduce(total)
    return int(total.item())


class CPUSyncBatchNorm(nn.BatchNorm2d):
    """BatchNorm2d whose batch statistics are summed over all processes, for CPU (gloo) training,
    where ``nn.SyncBatchNorm`` refuses to run. (B, C, H, W) -> (B, C, H, W)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not (self.training and dist.is_initialized() and dist.get_world_size() > 1):
            return super().forward(x)
        count = torch.full_like(x[0, :, 0, 0], x.numel() / x.shape[1])
        stats = torch.stack([x.sum((0, 2, 3)), (x * x).sum((0, 2, 3)), count])
        stats = dist_fn.all_reduce(stats)  # differentiable sum over processes
        n = stats[2]
        mean = stats[0] / n
        var = stats[1] / n - mean * mean
        with torch.no_grad():
            self.num_batches_tracked += 1
            self.running_mean.lerp_(mean.detach(), self.momentum)
            self.running_var.lerp_(var.detach() * n / (n - 1), self.momentum)
        scale = self.weight * torch.rsqrt(var + self.eps)
        return x * scale[None, :, None, None] + (self.bias - mean * scale)[None, :, None, None]


def convert_batchnorm(model: nn.Module, info: DistInfo) -> nn.Module:
    """SyncBatchNorm when distributed (torch's on GPU, :class:`CPUSyncBatchNorm` on CPU), else as is."""
    if not info.distributed:
        return model
    if info.device.type != "cpu":
        return nn.SyncBatchNorm.convert_sync_batchnorm(model)
    for name, child in model.named_children():
        if isinstance(child, nn.BatchNorm2d):
            sync = CPUSyncBatchNorm(child.num_features, child.eps, child.momentum, child.affine,
                                    child.track_running_stats)
            sync.load_state_dict(child.state_dict())
            setattr(model, name, sync)
        else:
            convert_batchnorm(child, info)
    return model


def warn_if_batchnorm_batch_of_one(model: nn.Module, per_process_batch: int) -> None:
    if per_process_batch == 1 and any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules()):
        warnings.warn(
            "a batch of 1 image per process with BatchNorm: its statistics come from a single image; "
            "use a batch of 2 or more per process (or several processes with SyncBatchNorm)",
            stacklevel=2,
        )


def all_reduce_mean(value: torch.Tensor, info: DistInfo) -> torch.Tensor:
    if info.distributed:
        value = value.clone()
        dist.all_reduce(value)
        value /= info.world_size
    return value
