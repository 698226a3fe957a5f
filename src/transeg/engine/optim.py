"""Optimizers with the papers' parameter groups, and the warm-up + poly learning-rate schedule."""

from __future__ import annotations

import torch
from torch import nn

from transeg.engine.recipe import OptimizerSection, ScheduleSection

# ``param_groups: swin``: the parameters MMSegmentation's Swin UperNet configs ('relative_position_bias_table',
# 'absolute_pos_embed') and ViT/DeiT UperNet configs ('pos_embed', 'cls_token') train without weight decay
SWIN_NO_DECAY = ("relative_position_bias_table", "pos_embed", "cls_token")


def param_groups(model: nn.Module, cfg: OptimizerSection) -> list[dict]:
    """Parameter groups following the official ``paramwise_cfg`` of SegFormer or, with
    ``cfg.param_groups == "swin"``, of MMSegmentation's Swin and ViT/DeiT UperNet configs.

    Decoder parameters get ``lr * head_lr_mult`` (SegFormer's 'head' key; the Swin recipes set it to
    1); LayerNorm parameters get ``weight_decay * norm_decay_mult`` (the official 'norm' key matches
    every LayerNorm of the encoder and nothing in the head, so the decoder BatchNorm and all biases
    keep their decay). "swin" also takes the decay off every parameter whose name holds one of
    ``SWIN_NO_DECAY`` (relative-position-bias tables; position embeddings and class token).
    """
    layer_norm_params = {id(p) for m in model.modules() if isinstance(m, nn.LayerNorm) for p in m.parameters()}
    no_decay = SWIN_NO_DECAY if cfg.param_groups == "swin" else ()
    groups: dict[tuple[float, float], list[nn.Parameter]] = {}
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        lr_mult = cfg.head_lr_mult if name.startswith("decoder.") else 1.0
        decay_mult = cfg.norm_decay_mult if id(param) in layer_norm_params else 1.0
        if any(key in name for key in no_decay):
            decay_mult = 0.0
        groups.setdefault((lr_mult, decay_mult), []).append(param)
    return [
        {"params": params, "lr": cfg.lr * lr_mult, "weight_decay": cfg.weight_decay * decay_mult}
        for (lr_mult, decay_mult), params in sorted(groups.items())
    ]


#: devices whose fused AdamW kernel PyTorch ships and this project tests
FUSED_DEVICES = ("cpu", "cuda")


def build_optimizer(model: nn.Module, cfg: OptimizerSection) -> torch.optim.Optimizer:
    """The optimizer of ``cfg`` over :func:`param_groups`. AdamW is PyTorch's fused kernel (one pass
    over all parameters per step instead of eight small operations per tensor) when every parameter
    is a floating-point tensor on a device of ``FUSED_DEVICES``; build the model on its device first."""
    groups = param_groups(model, cfg)
    if cfg.type == "adamw":
        params = [p for group in groups for p in group["params"]]
        fused = all(p.is_floating_point() and p.device.type in FUSED_DEVICES for p in params) or None
        return torch.optim.AdamW(groups, lr=cfg.lr, betas=cfg.betas, weight_decay=cfg.weight_decay, fused=fused)
    return torch.optim.SGD(groups, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)


def lr_factor(iteration: int, base_lr: float, cfg: ScheduleSection) -> float:
    """lr / base_lr at ``iteration`` (mmcv 0.x semantics, which the official configs ran with).

    poly: ``(base - min_lr) * (1 - t / T) ** power + min_lr`` over all T iterations; during the
    first ``warmup_iters`` that is scaled by a linear ramp from ``warmup_ratio`` to 1.
    """
    progress = min(iteration, cfg.iterations) / cfg.iterations
    lr = (base_lr - cfg.min_lr) * (1 - progress) ** cfg.power + cfg.min_lr
    if iteration < cfg.warmup_iters:
        k = (1 - iteration / cfg.warmup_iters) * (1 - cfg.warmup_ratio)
        lr *= 1 - k
    return lr / base_lr


def build_scheduler(optimizer: torch.optim.Optimizer, cfg: ScheduleSection) -> torch.optim.lr_scheduler.LambdaLR:
    """A per-iteration LambdaLR applying :func:`lr_factor` to each group's own base lr."""
    lambdas = [
        (lambda it, base=group["lr"]: lr_factor(it, base, cfg)) for group in optimizer.param_groups
    ]
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambdas)
