"""A small SegFormer (one block per stage) with structured weights, and structured images: what the
deploy tests export, quantise and compare."""

from __future__ import annotations

import dataclasses

import numpy as np
import torch

from transeg.models.factory import build_model
from transeg.models.segmentor import Segmentor
from transeg.models.zoo import model_config

NUM_CLASSES = 5


def small_segformer(seed: int = 0) -> Segmentor:
    """segformer-b0's layout with one block per stage and a 64-wide decoder, 5 named, coloured classes."""
    config = model_config("segformer-b0", NUM_CLASSES)
    config = dataclasses.replace(
        config, encoder_config=dataclasses.replace(config.encoder_config, depths=(1, 1, 1, 1)),
        decoder_config=dataclasses.replace(config.decoder_config, embed_dim=64),
        class_names=("sky", "road", "car", "tree", "sign"),
        palette=((70, 130, 180), (128, 64, 128), (0, 0, 142), (107, 142, 35), (220, 220, 0)))
    torch.manual_seed(seed)
    return build_model(config).eval()


def scene(height: int, width: int, seed: int = 0) -> np.ndarray:
    """(H, W, 3) uint8 RGB: a few flat colour regions with soft edges and a little noise, like a photo
    more than like white noise."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:height, 0:width] / max(height, width)
    image = np.zeros((height, width, 3))
    for _ in range(6):
        cy, cx, r = rng.random(3) * (1, 1, 0.6)
        inside = ((yy - cy) ** 2 + (xx - cx) ** 2) < r ** 2
        image[inside] = rng.integers(0, 256, 3)
    image += rng.normal(0, 6, image.shape)
    return np.clip(image, 0, 255).astype(np.uint8)
