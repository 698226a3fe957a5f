"""The one table that turns names in a config into modules, and the builders that use it."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable
from typing import Any

from transeg.errors import TransegError
from transeg.models.config import ModelConfig
from transeg.models.decoders.base import Decoder
from transeg.models.decoders.linear import LinearDecoder, LinearDecoderConfig
from transeg.models.decoders.mask_transformer import MaskTransformer, MaskTransformerConfig
from transeg.models.decoders.mla import MLAConfig, MLADecoder
from transeg.models.decoders.mlp import MLPDecoder, MLPDecoderConfig
from transeg.models.decoders.mmseg_mlp import SegformerHead, SegformerHeadConfig
from transeg.models.decoders.segdeformer import build_segdeformer
from transeg.models.decoders.segdeformer.config import SegDeformerConfig
from transeg.models.decoders.uper import UperNetConfig, UperNetDecoder
from transeg.models.encoders.base import Encoder
from transeg.models.encoders.mit import MiTConfig, MixTransformer
from transeg.models.encoders.resnet import ResNet, ResNetConfig
from transeg.models.encoders.swin import SwinConfig, SwinTransformer
from transeg.models.encoders.vit import VisionTransformer, ViTConfig
from transeg.models.segmentor import Segmentor

# name in a config -> (config class, builder)
ENCODERS: dict[str, tuple[type, Callable[..., Encoder]]] = {
    "mit": (MiTConfig, MixTransformer),
    "vit": (ViTConfig, VisionTransformer),
    "swin": (SwinConfig, SwinTransformer),
    "resnet": (ResNetConfig, ResNet),  # ResNet / ResNeXt, the CNN encoders of SegFormer Table 1d
}
DECODERS: dict[str, tuple[type, Callable[..., Decoder]]] = {
    "mlp": (MLPDecoderConfig, MLPDecoder),
    "mmseg_mlp": (SegformerHeadConfig, SegformerHead),  # MMSegmentation's SegformerHead
    "linear": (LinearDecoderConfig, LinearDecoder),
    "mask_transformer": (MaskTransformerConfig, MaskTransformer),
    "uper": (UperNetConfig, UperNetDecoder),
    "mla": (MLAConfig, MLADecoder),  # SETR's multi-level aggregation (SegFormer Table 3)
    "segdeformer": (SegDeformerConfig, build_segdeformer),  # paper or released head, by cfg.mode
}


def build_model(config: ModelConfig) -> Segmentor:
    """Instantiate the modules described by ``config`` (randomly initialised), in eval mode."""
    bands = config.encoder_config.in_channels
    if bands < 1 or len(config.mean) != bands or len(config.std) != bands:
        raise TransegError(f"{config.name}: {bands} input bands need {bands} mean and std values (one per band), "
                           f"got {len(config.mean)} and {len(config.std)}")
    encoder = ENCODERS[config.encoder][1](config.encoder_config)
    decoder = DECODERS[config.decoder][1](encoder.out_channels, config.num_classes, config.decoder_config)
    return Segmentor(encoder, decoder, config).eval()


def model_config_from_dict(data: dict[str, Any], source: str = "config") -> ModelConfig:
    """Rebuild a ``ModelConfig`` from ``to_dict`` output; an unknown key or name is a TransegError naming it."""
    data = dict(data)
    _check_keys(ModelConfig, data, source)
    encoder, decoder = data["encoder"], data["decoder"]
    if encoder not in ENCODERS:
        raise TransegError(f"{source}: unknown encoder {encoder!r} (known: {sorted(ENCODERS)})")
    if decoder not in DECODERS:
        raise TransegError(f"{source}: unknown decoder {decoder!r} (known: {sorted(DECODERS)})")
    data["encoder_config"] = _dataclass_from_dict(ENCODERS[encoder][0], data["encoder_config"], source)
    data["decoder_config"] = _dataclass_from_dict(DECODERS[decoder][0], data["decoder_config"], source)
    for key in ("mean", "std", "class_names"):
        if data.get(key) is not None:
            data[key] = tuple(data[key])
    if data.get("palette") is not None:
        data["palette"] = tuple(tuple(int(c) for c in colour) for colour in data["palette"])
    return ModelConfig(**data)


def model_config_from_json(text: str, source: str = "config") -> ModelConfig:
    """``model_config_from_dict`` of a JSON text (``ModelConfig.to_json`` output)."""
    try:
        return model_config_from_dict(json.loads(text), source)
    except json.JSONDecodeError as exc:
        raise TransegError(f"{source}: the model config is not valid JSON ({exc})") from None


def _check_keys(cls: type, data: dict[str, Any], source: str) -> None:
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - set(fields))
    if unknown:
        raise TransegError(f"{source}: unknown key(s) {unknown} for {cls.__name__}")
    required = [
        name for name, f in fields.items()
        if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING and name not in data
    ]
    if required:
        raise TransegError(f"{source}: missing key(s) {required} for {cls.__name__}")


def _dataclass_from_dict(cls: type, data: dict[str, Any], source: str) -> Any:
    _check_keys(cls, data, source)
    return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in data.items()})
