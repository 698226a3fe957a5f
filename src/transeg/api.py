"""The joins of models and weights behind the public API: models by zoo name or from any checkpoint,
with or without pretrained encoder weights."""

from __future__ import annotations

import os
from pathlib import Path

from transeg.errors import TransegError
from transeg.models.factory import build_model
from transeg.models.segmentor import Segmentor
from transeg.models.zoo import ZOO, model_config, with_bands
from transeg.weights import load


def create_model(name: str, num_classes: int | None = None, encoder_weights: str | os.PathLike[str] | None = None,
                 class_names: tuple[str, ...] | None = None,
                 image_size: int | tuple[int, int] | None = None, in_channels: int = 3,
                 mean: tuple[float, ...] | None = None, std: tuple[float, ...] | None = None) -> Segmentor:
    """A new model of a named variant; ``encoder_weights`` initialises the encoder from a
    pretrained backbone file (e.g. an ImageNet ``mit_b2.pth``). ``image_size`` (ViT encoders: an
    int or (H, W), multiples of the patch size) is the size the position embeddings are learned
    for, the training crop as in the official Segmenter: pretrained ones are resized to it once,
    here, and inputs of that size use them as they are. ``in_channels`` bands (e.g. 5 for a
    multispectral raster) are normalised by per-band ``mean``/``std`` (default: ImageNet's RGB values
    repeated over the bands, as the adapted pretrained weights repeat R, G and B)."""
    config = with_bands(model_config(name, num_classes, class_names, image_size), in_channels, mean, std)
    model = build_model(config)
    if encoder_weights is not None:
        load.load_encoder_weights(model, encoder_weights)
    return model


def load_model(spec: str | os.PathLike[str], num_classes: int | None = None) -> Segmentor:
    """A model from a zoo name (random weights, ``num_classes`` classes or the variant's default) or
    from any checkpoint ``transeg.weights.load.load_model`` reads, which must then have ``num_classes``
    classes when that is given. Only a ``str`` is looked up in the zoo: a path object is a path."""
    if isinstance(spec, str):
        if spec in ZOO:
            return create_model(spec, num_classes=num_classes)
        if not Path(spec).exists() and "/" not in spec and "." not in spec:
            raise TransegError(f"{spec!r} is neither a model name (see `transeg list`) nor an existing path")
    model = load.load_model(spec)
    if num_classes is not None and num_classes != model.num_classes:
        raise TransegError(f"{spec}: the checkpoint has {model.num_classes} classes, not {num_classes}")
    return model
