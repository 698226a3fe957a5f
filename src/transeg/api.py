"""The joins of models and weights behind the public API: models by zoo name, with or without weights."""

from __future__ import annotations

import os

from transeg.models.factory import build_model
from transeg.models.segmentor import Segmentor
from transeg.models.zoo import model_config
from transeg.weights.load import load_encoder_weights


def create_model(name: str, num_classes: int | None = None, encoder_weights: str | os.PathLike[str] | None = None,
                 class_names: tuple[str, ...] | None = None,
                 image_size: int | tuple[int, int] | None = None) -> Segmentor:
    """A new model of a named variant; ``encoder_weights`` initialises the encoder from a
    pretrained backbone file (e.g. an ImageNet ``mit_b2.pth``). ``image_size`` (ViT encoders: an
    int or (H, W), multiples of the patch size) is the size the position embeddings are learned
    for, the training crop as in the official Segmenter: pretrained ones are resized to it once,
    here, and inputs of that size use them as they are."""
    model = build_model(model_config(name, num_classes, class_names, image_size))
    if encoder_weights is not None:
        load_encoder_weights(model, encoder_weights)
    return model
