"""Named model variants, as plain data. ``create_model(name)`` builds one."""

from __future__ import annotations

import dataclasses

from transeg.errors import TransegError
from transeg.models.config import ModelConfig, build_model
from transeg.models.decoders.mlp import MLPDecoderConfig
from transeg.models.encoders.mit import MiTConfig
from transeg.models.segmentor import Segmentor

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


def list_models() -> list[str]:
    """Names accepted by ``create_model``."""
    return sorted(ZOO)


def model_config(name: str, num_classes: int | None = None,
                 class_names: tuple[str, ...] | None = None) -> ModelConfig:
    """The config of a named variant, with the class count (default 150, ADE20K) replaced."""
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
    return config


def create_model(name: str, num_classes: int | None = None, encoder_weights: str | None = None,
                 class_names: tuple[str, ...] | None = None) -> Segmentor:
    """A new model of a named variant; ``encoder_weights`` initialises the encoder from a
    pretrained backbone file (e.g. an ImageNet ``mit_b2.pth``)."""
    model = build_model(model_config(name, num_classes, class_names))
    if encoder_weights is not None:
        from transeg.weights.io import load_encoder_weights

        load_encoder_weights(model, encoder_weights)
    return model
