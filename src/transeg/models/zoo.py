"""Named model variants, as plain data, and the lookups over them (``model_config``, ``find_variant``).
``transeg.create_model(name)`` builds one."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

from transeg.errors import TransegError
from transeg.models.config import IMAGENET_MEAN, IMAGENET_STD, ModelConfig
from transeg.models.decoders.linear import LinearDecoderConfig
from transeg.models.decoders.mask_transformer import MaskTransformerConfig
from transeg.models.decoders.mla import MLAConfig
from transeg.models.decoders.mlp import MLPDecoderConfig
from transeg.models.decoders.mmseg_mlp import SegformerHeadConfig
from transeg.models.decoders.segdeformer.config import SegDeformerConfig
from transeg.models.decoders.uper import UperNetConfig
from transeg.models.encoders.mit import MiTConfig
from transeg.models.encoders.resnet import ResNetConfig
from transeg.models.encoders.swin import SwinConfig
from transeg.models.encoders.vit import ViTConfig

_MIT_WIDE = (64, 128, 320, 512)
MIT_VARIANTS: dict[str, MiTConfig] = {
    "b0": MiTConfig(widths=(32, 64, 160, 256), depths=(2, 2, 2, 2)),
    "b1": MiTConfig(widths=_MIT_WIDE, depths=(2, 2, 2, 2)),
    "b2": MiTConfig(widths=_MIT_WIDE, depths=(3, 4, 6, 3)),
    "b3": MiTConfig(widths=_MIT_WIDE, depths=(3, 4, 18, 3)),
    "b4": MiTConfig(widths=_MIT_WIDE, depths=(3, 8, 27, 3)),
    "b5": MiTConfig(widths=_MIT_WIDE, depths=(3, 6, 40, 3)),
}
SEGFORMER_DECODER_DIM = {"b0": 256, "b1": 256, "b2": 768, "b3": 768, "b4": 768, "b5": 768}

ZOO: dict[str, ModelConfig] = {
    f"segformer-{v}": ModelConfig(
        name=f"segformer-{v}",
        encoder="mit",
        encoder_config=MIT_VARIANTS[v],
        decoder="mlp",
        decoder_config=MLPDecoderConfig(embed_dim=SEGFORMER_DECODER_DIM[v]),
        num_classes=150,
    )
    for v in MIT_VARIANTS
}


def _segformer_pe(variant: str, size: tuple[int, int], suffix: str = "") -> ModelConfig:
    """SegFormer Table 1c's "PE" arm: position embeddings (learned for ``size`` inputs) after every
    patch embedding, as PVT, and a plain FFN in place of Mix-FFN."""
    name = f"segformer-{variant}-pe{suffix}"
    encoder = dataclasses.replace(MIT_VARIANTS[variant], pos_embed=True, pos_embed_size=size, mix_ffn=False)
    return dataclasses.replace(ZOO[f"segformer-{variant}"], name=name, encoder_config=encoder)


# after the plain variants, which name lookups by encoder shape must find first
ZOO.update({c.name: c for c in [
    *(_segformer_pe(v, (512, 512)) for v in MIT_VARIANTS),
    _segformer_pe("b0", (240, 320), "-240x320"),  # CamVid crops: configs/analysis/segformer-b0-camvid-pe.yaml
]})

# SegFormer Table 1d: CNN encoders with the All-MLP decoder (C = 768), and MiT-B2 decoding its stage-4
# map alone ("S4"). ResNet-50/101 are MMSegmentation's ResNetV1c segmentation backbones (deep stem),
# ResNeXt-101 is 64x4d with the 7x7 stem (MMSegmentation's ResNeXt, torchvision's resnext101_64x4d):
# the combinations whose counts reproduce the table (a 32x4d ResNeXt gives 47.6 M, not 86.8 M).
RESNET_VARIANTS: dict[str, ResNetConfig] = {
    "r50": ResNetConfig(depths=(3, 4, 6, 3), deep_stem=True),
    "r101": ResNetConfig(depths=(3, 4, 23, 3), deep_stem=True),
    "x101": ResNetConfig(depths=(3, 4, 23, 3), groups=64, width_per_group=4),
}
ZOO.update({
    f"segformer-{v}": ModelConfig(
        name=f"segformer-{v}", encoder="resnet", encoder_config=RESNET_VARIANTS[v],
        decoder="mlp", decoder_config=MLPDecoderConfig(embed_dim=768), num_classes=150,
    )
    for v in RESNET_VARIANTS
})
ZOO["segformer-b2-s4"] = dataclasses.replace(
    ZOO["segformer-b2"], name="segformer-b2-s4", decoder_config=MLPDecoderConfig(embed_dim=768, in_stages=(3,))
)

# Segmenter (Strudel et al. 2021), Table 1: (width, depth, heads); head size 64, MLP 4x.
VIT_SIZES: dict[str, tuple[int, int, int]] = {
    "t": (192, 12, 3), "s": (384, 12, 6), "b": (768, 12, 12), "l": (1024, 24, 16),
}
# The size / patch pairs of the paper's Table 3, ViT (AugReg) weights: mean = std = 0.5 on [0, 1].
SEGMENTER_VITS = ("t16", "s16", "b16", "l16", "b8", "b32")
VIT_MEAN = VIT_STD = (127.5, 127.5, 127.5)
SEGMENTER_DECODERS = {
    "linear": ("linear", LinearDecoderConfig()),
    "mask": ("mask_transformer", MaskTransformerConfig()),
}


def vit_config(variant: str, distilled: bool = False) -> ViTConfig:
    """The encoder of ``segmenter-{variant}``, e.g. ``vit_config("b16")``."""
    dim, depth, heads = VIT_SIZES[variant[0]]
    return ViTConfig(patch_size=int(variant[1:]), embed_dim=dim, depth=depth, heads=heads, distilled=distilled)


def _segmenter(variant: str, decoder: str, deit: bool = False) -> ModelConfig:
    name = f"segmenter-{variant}-{decoder}" + ("-deit" if deit else "")
    decoder_name, decoder_config = SEGMENTER_DECODERS[decoder]
    return ModelConfig(
        name=name, encoder="vit", encoder_config=vit_config(variant, distilled=deit),
        decoder=decoder_name, decoder_config=decoder_config, num_classes=150,
        mean=IMAGENET_MEAN if deit else VIT_MEAN, std=IMAGENET_STD if deit else VIT_STD,
    )


ZOO.update({c.name: c for c in [
    *(_segmenter(v, d) for v in SEGMENTER_VITS for d in SEGMENTER_DECODERS),
    *(_segmenter("b16", d, deit=True) for d in SEGMENTER_DECODERS),  # Seg-B†/16: DeiT-B, distilled
]})

# Swin (Liu et al. 2021) with UperNet, the SegDeformer paper's † baselines: window 7 for T/S (224
# ImageNet-1K weights), 12 for B/L (384 ImageNet-22K weights); drop path 0.3; UperNet 512 channels
# with the auxiliary FCN head (256 channels on stage 3, weight 0.4) of the MMSegmentation recipe.
SWIN_VARIANTS: dict[str, SwinConfig] = {
    "t": SwinConfig(embed_dim=96, depths=(2, 2, 6, 2), heads=(3, 6, 12, 24), window_size=7),
    "s": SwinConfig(embed_dim=96, depths=(2, 2, 18, 2), heads=(3, 6, 12, 24), window_size=7),
    "b": SwinConfig(embed_dim=128, depths=(2, 2, 18, 2), heads=(4, 8, 16, 32), window_size=12),
    "l": SwinConfig(embed_dim=192, depths=(2, 2, 18, 2), heads=(6, 12, 24, 48), window_size=12),
}
UPERNET_DECODER = UperNetConfig(channels=512, aux_channels=256)
ZOO.update({
    f"upernet-swin-{v}": ModelConfig(
        name=f"upernet-swin-{v}", encoder="swin", encoder_config=SWIN_VARIANTS[v],
        decoder="uper", decoder_config=UPERNET_DECODER, num_classes=150,
    )
    for v in SWIN_VARIANTS
})

# SETR's multi-level aggregation decoder (Zheng et al. 2021): SegFormer Table 3's "MLA (SETR)" rows on
# MiT-B2/B5 (and on Swin-T, not in the table), and SETR-MLA itself on ViT-L/16: blocks 6, 12, 18 and 24,
# mean = std = 0.5 (SETR's ImageNet-21K ViT-L weights, like Segmenter's), position embeddings resized
# bilinearly and no stochastic depth (MMSegmentation's SETR recipe). Auxiliary heads off. Also Table
# 3's "UperNet (Swin)" on MiT-B2, with the Swin recipe's auxiliary FCN head.
MLA_DECODER = MLAConfig()
ZOO.update({c.name: c for c in [
    *(ModelConfig(name=f"mla-mit-{v}", encoder="mit", encoder_config=MIT_VARIANTS[v], decoder="mla",
                  decoder_config=MLA_DECODER, num_classes=150) for v in ("b2", "b5")),
    ModelConfig(name="mla-swin-t", encoder="swin", encoder_config=SWIN_VARIANTS["t"], decoder="mla",
                decoder_config=MLA_DECODER, num_classes=150),
    ModelConfig(name="mla-vit-l16", encoder="vit", decoder="mla", decoder_config=MLA_DECODER, num_classes=150,
                encoder_config=dataclasses.replace(vit_config("l16"), out_indices=(5, 11, 17, 23), drop_path_rate=0.0),
                mean=VIT_MEAN, std=VIT_STD),
    *(ModelConfig(name=f"upernet-mit-{v}", encoder="mit", encoder_config=MIT_VARIANTS[v], decoder="uper",
                  decoder_config=UPERNET_DECODER, num_classes=150) for v in ("b2", "b5")),
]})

# SegFormer Table 3's other encoders with the All-MLP decoder: Swin-T (C = 768, as on MiT-B2/B5) and
# ViT-L/16. For ViT-L the table's 0.6 M / 0.6 GFLOPs rule out C = 768 (0.90 M, 0.92 G for the last map
# alone); the last map alone at C = 512, without a fuse conv (as "S4" in Table 1d), gives 0.60 M and
# 0.62 G. (Four maps at C = 128 would fit too, 0.61 M and 0.62 G; nothing published decides.)
ZOO.update({c.name: c for c in [
    ModelConfig(name="segformer-swin-t", encoder="swin", encoder_config=SWIN_VARIANTS["t"], decoder="mlp",
                decoder_config=MLPDecoderConfig(embed_dim=768), num_classes=150),
    ModelConfig(name="segformer-vit-l16", encoder="vit", encoder_config=vit_config("l16"), decoder="mlp",
                decoder_config=MLPDecoderConfig(embed_dim=512), num_classes=150, mean=VIT_MEAN, std=VIT_STD),
]})

# MMSegmentation's SegFormer (its model zoo's checkpoints): the same MiT, with LayerNorm eps 1e-6
# everywhere, and MMSegmentation's SegformerHead (a ConvModule per stage, C = 256 for every variant).
# Its head is also the "SegFormer" baseline of the SegDeformer paper.
MMSEG_MIT_EPS = 1e-6
ZOO.update({
    f"segformer-mmseg-{v}": ModelConfig(
        name=f"segformer-mmseg-{v}", encoder="mit",
        encoder_config=dataclasses.replace(MIT_VARIANTS[v], norm_eps=MMSEG_MIT_EPS, embed_norm_eps=MMSEG_MIT_EPS),
        decoder="mmseg_mlp", decoder_config=SegformerHeadConfig(channels=256), num_classes=150,
    )
    for v in MIT_VARIANTS
})

# SegDeformer (Shi et al. 2022): the paper's rows (Tables 1, 3, 7). C = 256 on MiT, as every MiT row's
# parameter count implies (and Table 8's "(-,256)" for B2): the authors' SegFormer baseline is the
# MMSegmentation head, 256 channels for B2 and B5 too. C = 512 on DeiT and Swin, the UperNet width of
# their recipes, which the counts of Table 7 also imply. "-released": the authors' released head
# (MiT-B1/B2/B5 only); "-eff": efficient attention with R = 4 (Table 7's B2 and Swin-S counts); "-uper":
# UperNet fusion with the recipe's auxiliary FCN head (the † rows). DeiT: non-distilled, the outputs
# of blocks 3, 6, 9 and 12 (out_indices 2, 5, 8, 11, as MMSegmentation's UperNet-ViT recipes), four
# maps at 1/16, position embeddings resized bicubically as MMSegmentation does.
SEGDEFORMER = SegDeformerConfig()
SEGDEFORMER_RELEASED = SegDeformerConfig(mode="released")
SEGDEFORMER_EFF = SegDeformerConfig(efficient_ratio=4)
SEGDEFORMER_WIDE = SegDeformerConfig(channels=512)
SEGDEFORMER_UPER = SegDeformerConfig(channels=512, fusion="uper", uper_aux_channels=256)
SEGDEFORMER_UPER_EFF = dataclasses.replace(SEGDEFORMER_UPER, efficient_ratio=4)


def _segdeformer(name: str, encoder: str, encoder_config, decoder_config: SegDeformerConfig) -> ModelConfig:
    return ModelConfig(name=f"segdeformer-{name}", encoder=encoder, encoder_config=encoder_config,
                       decoder="segdeformer", decoder_config=decoder_config, num_classes=150)


def _deit(size: str) -> ViTConfig:
    return dataclasses.replace(vit_config(f"{size}16"), out_indices=(2, 5, 8, 11), pos_interpolation="bicubic")


ZOO.update({c.name: c for c in [
    # not in the paper: MiT-B0, for small machines (the CamVid CPU recipe)
    _segdeformer("mit-b0", "mit", MIT_VARIANTS["b0"], SEGDEFORMER),
    _segdeformer("mit-b0-eff", "mit", MIT_VARIANTS["b0"], SEGDEFORMER_EFF),
    *(_segdeformer(f"mit-{v}", "mit", MIT_VARIANTS[v], SEGDEFORMER) for v in ("b1", "b2", "b5")),
    *(_segdeformer(f"mit-{v}-released", "mit", MIT_VARIANTS[v], SEGDEFORMER_RELEASED) for v in ("b1", "b2", "b5")),
    *(_segdeformer(f"mit-{v}-eff", "mit", MIT_VARIANTS[v], SEGDEFORMER_EFF) for v in ("b2", "b5")),
    *(_segdeformer(f"deit-{v}16{suffix}", "vit", _deit(v), dec)
      for v in ("s", "b") for suffix, dec in (("", SEGDEFORMER_WIDE), ("-uper", SEGDEFORMER_UPER))),
    *(_segdeformer(f"swin-{v}{suffix}", "swin", SWIN_VARIANTS[v], dec) for v in ("s", "l")
      for suffix, dec in (("", SEGDEFORMER_WIDE), ("-uper", SEGDEFORMER_UPER), ("-uper-eff", SEGDEFORMER_UPER_EFF))),
]})


# SegDeformer Table 8: the SegFormer-B2 base decoders "(depth, width)" that the paper sets against
# SegDeformer (-, 256) at about the same parameters / fps: SegDeformer's head with both mining modules
# off (which is the SegFormer head at width C), depth = the stage projections + ``fuse_layers`` 1x1
# conv + BN + ReLU layers. The paper does not say which layers its deeper decoders add; these are ours.
TABLE8_BASE_DECODERS = {(2, 256), (8, 256), (8, 512)}
ZOO.update({c.name: c for c in [
    ModelConfig(name=f"segformer-b2-d{depth}-c{width}", encoder="mit", encoder_config=MIT_VARIANTS["b2"],
                decoder="segdeformer", num_classes=150,
                decoder_config=SegDeformerConfig(channels=width, internal=False, external=False, fuse_layers=depth - 1))
    for depth, width in sorted(TABLE8_BASE_DECODERS)
]})


def list_models() -> list[str]:
    """Names accepted by ``create_model``."""
    return sorted(ZOO)


def _same(a: Any) -> Any:
    return a


def find_variant(config: ModelConfig, encoder_key: Callable[[Any], Any] = _same,
                 decoder_key: Callable[[Any], Any] = _same) -> str:
    """The name of the first zoo variant with ``config``'s encoder and decoder kinds whose encoder and
    decoder configs match, compared through ``encoder_key`` / ``decoder_key`` (e.g. to ignore a
    LayerNorm eps a checkpoint format cannot carry); ``"custom"`` when none does."""
    for name, variant in ZOO.items():
        if (variant.encoder == config.encoder and variant.decoder == config.decoder
                and encoder_key(variant.encoder_config) == encoder_key(config.encoder_config)
                and decoder_key(variant.decoder_config) == decoder_key(config.decoder_config)):
            return name
    return "custom"


WIDTH_FIELDS = ("embed_dim", "channels")  # the decoder width C, by decoder config


def with_decoder_width(config: ModelConfig, width: int) -> ModelConfig:
    """``config`` with its decoder's width C replaced (SegFormer Table 1b varies it)."""
    field = next((f for f in WIDTH_FIELDS if hasattr(config.decoder_config, f)), None)
    if field is None:
        raise TransegError(f"the {config.decoder!r} decoder of {config.name} has no width to set")
    if width < 1:
        raise TransegError(f"the decoder width must be positive, got {width}")
    decoder = dataclasses.replace(config.decoder_config, **{field: width})
    return dataclasses.replace(config, name=f"{config.name}-c{width}", decoder_config=decoder)


def with_image_size(config: ModelConfig, image_size: int | tuple[int, int]) -> ModelConfig:
    """``config`` with its encoder's position-embedding grid learned for ``image_size`` (H, W) or
    square inputs (the official Segmenter's ``image_size``: the training crop). Only encoders with
    learned position embeddings at one size (ViT) have one."""
    if not hasattr(config.encoder_config, "image_size"):
        raise TransegError(f"image_size {image_size}: the {config.encoder!r} encoder of {config.name} "
                           "has no position-embedding size to set")
    h, w = (image_size, image_size) if isinstance(image_size, int) else (int(image_size[0]), int(image_size[1]))
    if h < 1 or w < 1:
        raise TransegError(f"image_size must be positive, got {image_size}")
    encoder = dataclasses.replace(config.encoder_config, image_size=h if h == w else (h, w))
    return dataclasses.replace(config, encoder_config=encoder)


def model_config(name: str, num_classes: int | None = None, class_names: tuple[str, ...] | None = None,
                 image_size: int | tuple[int, int] | None = None) -> ModelConfig:
    """The config of a named variant, with the class count (default 150, ADE20K) replaced and, for
    a ViT, the position embeddings learned at ``image_size`` (default: the variant's, 512)."""
    if name not in ZOO:
        raise TransegError(f"unknown model name {name!r}; known: {', '.join(list_models())}")
    config = ZOO[name]
    if class_names is not None:
        num_classes = num_classes or len(class_names)
        if len(class_names) != num_classes:
            raise TransegError(f"{len(class_names)} class names given for {num_classes} classes")
    if num_classes is not None:
        if num_classes < 1:
            raise TransegError(f"num_classes must be at least 1, got {num_classes}")
        config = dataclasses.replace(config, num_classes=num_classes, class_names=class_names)
    if image_size is not None:
        config = with_image_size(config, image_size)
    return config


def with_bands(config: ModelConfig, in_channels: int, mean: tuple[float, ...] | None = None,
               std: tuple[float, ...] | None = None) -> ModelConfig:
    """``config`` for ``in_channels``-band input with per-band ``mean``/``std`` (default: the RGB
    values repeated over the bands); the 3-band RGB config itself when nothing changes."""
    if isinstance(in_channels, bool) or not isinstance(in_channels, int) or in_channels < 1:
        raise TransegError(f"in_channels must be a positive integer, got {in_channels!r}")
    if in_channels == 3 and mean is None and std is None:
        return config

    def per_band(values: tuple[float, ...] | None, rgb: tuple[float, ...]) -> tuple[float, ...]:
        return tuple(float(v) for v in values) if values is not None else tuple(rgb[i % 3] for i in range(in_channels))

    encoder_config = dataclasses.replace(config.encoder_config, in_channels=in_channels)
    return dataclasses.replace(config, encoder_config=encoder_config, mean=per_band(mean, config.mean),
                               std=per_band(std, config.std))
