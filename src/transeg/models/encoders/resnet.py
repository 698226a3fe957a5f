"""ResNet and ResNeXt encoders (He et al., 2016; Xie et al., 2017), the CNN baselines of SegFormer's
Table 1d.

Bottleneck blocks (1x1 -> 3x3 -> 1x1, expansion 4) with the stride on the 3x3 conv ("v1.5", as
torchvision and MMSegmentation), BatchNorm, a projection shortcut (1x1 conv + BN) where the shape
changes. Stem: one 7x7 stride-2 conv (standard), or three 3x3 convs of 32, 32 and 64 channels
("deep", MMSegmentation's ResNetV1c segmentation backbones); then a 3x3 stride-2 max pool. Output:
the maps of the four stages at strides 4, 8, 16, 32 with 256, 512, 1024, 2048 channels.

State-dict keys (without the ``encoder.`` prefix) are torchvision's, so that its ImageNet checkpoints
load as they are (``fc`` dropped): ``conv1``, ``bn1`` (standard stem), ``layer{1..4}.{j}.{conv1,bn1,
conv2,bn2,conv3,bn3}``, ``layer{1..4}.0.downsample.{0,1}`` (conv, BN). The deep stem is
``stem.{conv1,bn1,conv2,bn2,conv3,bn3}`` (``transeg.weights.resnet`` maps MMSegmentation's
``stem.{0,1,3,4,6,7}`` onto it).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from transeg.errors import TransegError
from transeg.models.encoders.base import Encoder
from transeg.models.layers.drop import DropPath


@dataclass(frozen=True)
class ResNetConfig:
    """A ResNet/ResNeXt variant. The 3x3 conv of stage i has ``groups * width_per_group * 2**i``
    channels (ResNet: 1 x 64; ResNeXt 32x4d: 32 x 4; 64x4d: 64 x 4); each block outputs 4 times
    64 * 2**i. ``deep_stem``: three 3x3 convs (stem_channels / 2, / 2, stem_channels) in place of
    the 7x7 one. ``out_stages`` selects the maps returned (0 = stride 4 … 3 = stride 32); stages
    after the last output are not built. ``drop_path_rate``: stochastic depth on the residual
    branches, rising linearly over the blocks (0, as in the reference backbones)."""

    depths: tuple[int, ...] = (3, 4, 6, 3)
    groups: int = 1
    width_per_group: int = 64
    deep_stem: bool = False
    stem_channels: int = 64
    norm_eps: float = 1e-5
    out_stages: tuple[int, ...] = (0, 1, 2, 3)
    in_channels: int = 3
    drop_path_rate: float = 0.0

    def __post_init__(self) -> None:
        n, out = len(self.depths), self.out_stages
        if not self.depths or min(self.depths) < 1 or self.groups < 1 or self.width_per_group < 1:
            raise TransegError(f"ResNetConfig: depths {self.depths}, groups {self.groups} and width_per_group "
                               f"{self.width_per_group} must be positive")
        if not out or list(out) != sorted(set(out)) or out[0] < 0 or out[-1] >= n:
            raise TransegError(f"ResNetConfig: out_stages must be increasing stage indices in [0, {n}), got {out}")


EXPANSION = 4


def _conv_bn(in_channels: int, out_channels: int, kernel_size: int, stride: int, eps: float,
             groups: int = 1) -> tuple[nn.Conv2d, nn.BatchNorm2d]:
    conv = nn.Conv2d(in_channels, out_channels, kernel_size, stride, padding=kernel_size // 2, groups=groups,
                     bias=False)
    return conv, nn.BatchNorm2d(out_channels, eps=eps)


class Bottleneck(nn.Module):
    """1x1 reduce -> 3x3 (grouped, strided) -> 1x1 expand, plus the shortcut, then ReLU.
    (B, C_in, H, W) -> (B, 4 * planes, H / stride, W / stride)."""

    def __init__(self, in_channels: int, planes: int, stride: int, groups: int, width_per_group: int,
                 eps: float, drop_path: float = 0.0) -> None:
        super().__init__()
        width = planes * width_per_group // 64 * groups
        out_channels = planes * EXPANSION
        self.conv1, self.bn1 = _conv_bn(in_channels, width, 1, 1, eps)
        self.conv2, self.bn2 = _conv_bn(width, width, 3, stride, eps, groups)
        self.conv3, self.bn3 = _conv_bn(width, out_channels, 1, 1, eps)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = None
        if stride != 1 or in_channels != out_channels:
            self.downsample = nn.Sequential(*_conv_bn(in_channels, out_channels, 1, stride, eps))
        self.drop_path = DropPath(drop_path)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shortcut = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu(self.drop_path(out) + shortcut)


class DeepStem(nn.Module):
    """Three 3x3 convs (the first with stride 2), each + BN + ReLU: C/2, C/2, C channels.
    (B, 3, H, W) -> (B, C, H/2, W/2)."""

    def __init__(self, in_channels: int, channels: int, eps: float) -> None:
        super().__init__()
        half = channels // 2
        self.conv1, self.bn1 = _conv_bn(in_channels, half, 3, 2, eps)
        self.conv2, self.bn2 = _conv_bn(half, half, 3, 1, eps)
        self.conv3, self.bn3 = _conv_bn(half, channels, 3, 1, eps)
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.relu(self.bn1(self.conv1(x)))
        x = self.relu(self.bn2(self.conv2(x)))
        return self.relu(self.bn3(self.conv3(x)))


class ResNet(Encoder):
    """The ResNet/ResNeXt encoder. (B, 3, H, W) -> NCHW maps of ``out_stages`` (strides 4, 8, 16, 32)."""

    def __init__(self, cfg: ResNetConfig) -> None:
        super().__init__()
        self.config = cfg
        eps = cfg.norm_eps
        if cfg.deep_stem:
            self.stem = DeepStem(cfg.in_channels, cfg.stem_channels, eps)
        else:
            self.conv1, self.bn1 = _conv_bn(cfg.in_channels, cfg.stem_channels, 7, 2, eps)
            self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        # read back on the CPU, so that models also build under a "meta" default device
        rates = torch.linspace(0, cfg.drop_path_rate, sum(cfg.depths), device="cpu").tolist()
        in_channels, block = cfg.stem_channels, 0
        built = cfg.depths[: cfg.out_stages[-1] + 1]  # stages after the last output are not built
        self.stage_names: tuple[str, ...] = tuple(f"layer{i + 1}" for i in range(len(built)))
        for i, depth in enumerate(built):
            planes = 64 * 2**i
            blocks = []
            for j in range(depth):
                stride = 2 if i > 0 and j == 0 else 1
                blocks.append(Bottleneck(in_channels, planes, stride, cfg.groups, cfg.width_per_group, eps,
                                         rates[block]))
                in_channels, block = planes * EXPANSION, block + 1
            self.add_module(self.stage_names[i], nn.Sequential(*blocks))
        self.out_channels: tuple[int, ...] = tuple(64 * 2**i * EXPANSION for i in cfg.out_stages)
        self.strides: tuple[int, ...] = tuple(4 * 2**i for i in cfg.out_stages)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Convs: Kaiming normal (fan_out, ReLU gain); BN weight 1 and bias 0, except the last BN of
        each block, whose weight is 0 so that every block starts as the identity (MMSegmentation's
        backbone initialisation without pretrained weights)."""
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                fan_out = m.out_channels * m.kernel_size[0] * m.kernel_size[1] // m.groups
                nn.init.normal_(m.weight, 0.0, math.sqrt(2.0 / fan_out))
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
        for m in self.modules():
            if isinstance(m, Bottleneck):
                nn.init.zeros_(m.bn3.weight)

    def forward_stem(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) -> (B, stem_channels, H/4, W/4)."""
        x = self.stem(x) if self.config.deep_stem else self.relu(self.bn1(self.conv1(x)))
        return self.maxpool(x)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        x = self.forward_stem(x)
        features = []
        for i, name in enumerate(self.stage_names):
            x = getattr(self, name)(x)
            if i in self.config.out_stages:
                features.append(x)
        return features
