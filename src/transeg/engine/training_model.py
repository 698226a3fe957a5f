"""The model config a training recipe's ``model:`` section asks for: a zoo variant with the recipe's
classes, position-embedding size and regularisation."""

from __future__ import annotations

import dataclasses
from typing import Any

from transeg.engine.recipe import ModelSection
from transeg.errors import TransegError
from transeg.models.config import ModelConfig
from transeg.models.zoo import model_config

# ModelSection key -> (ModelConfig part, field of that part's config)
_PART_OPTIONS = {
    "drop_path_rate": ("encoder_config", "drop_path_rate"),
    "encoder_dropout": ("encoder_config", "dropout"),
    "decoder_dropout": ("decoder_config", "dropout"),
    "decoder_layers": ("decoder_config", "n_layers"),
}


def _with_option(config: ModelConfig, key: str, value: Any) -> ModelConfig:
    part, field = _PART_OPTIONS[key]
    sub = getattr(config, part)
    if field not in {f.name for f in dataclasses.fields(sub)}:
        kind = config.encoder if part == "encoder_config" else config.decoder
        raise TransegError(f"model.{key} {value}: the {kind!r} {part.split('_')[0]} of {config.name} has no "
                           f"{field!r} setting")
    return dataclasses.replace(config, **{part: dataclasses.replace(sub, **{field: value})})


def section_num_classes(section: ModelSection, class_names: tuple[str, ...]) -> int:
    """``section.num_classes``, which must be the dataset's class count when given (default: it)."""
    num_classes = section.num_classes or len(class_names)
    if num_classes != len(class_names):
        raise TransegError(f"model.num_classes is {num_classes} but the dataset has {len(class_names)} classes")
    return num_classes


def training_model_config(section: ModelSection, class_names: tuple[str, ...],
                          palette: tuple[tuple[int, int, int], ...] | None = None) -> ModelConfig:
    """The ``ModelConfig`` of ``section.name`` with one class per name, ``section.image_size`` (the
    grid of a ViT's position embeddings) and every encoder and decoder option the section sets."""
    num_classes = section_num_classes(section, class_names)
    config = model_config(section.name, num_classes, class_names=class_names, image_size=section.image_size)
    config = dataclasses.replace(config, palette=palette)
    for key in _PART_OPTIONS:
        value = getattr(section, key)
        if value is not None:
            config = _with_option(config, key, value)
    return config
