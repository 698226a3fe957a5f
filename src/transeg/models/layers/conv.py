"""Convolution + BatchNorm + ReLU, as mmcv's ConvModule (the UperNet, MLA and SegDeformer heads)."""

from __future__ import annotations

from torch import nn


class ConvNormAct(nn.Sequential):
    """k x k conv (no bias, 'same' padding) + BatchNorm + ReLU. (B, C_in, H, W) -> (B, C, H, W).

    Initialised as mmcv's ConvModule: the conv normal(0, sqrt(2 / fan_out)) (Kaiming, fan-out, ReLU
    gain), BatchNorm (1, 0). Parameter names: ``conv.weight``, ``bn.*``.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 1) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, kernel_size, padding=kernel_size // 2, bias=False)
        self.bn = nn.BatchNorm2d(out_channels)
        self.act = nn.ReLU(inplace=True)
        nn.init.kaiming_normal_(self.conv.weight, mode="fan_out", nonlinearity="relu")
