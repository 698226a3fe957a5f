"""Entry points of the public API that span several modules (``transeg.load_model``)."""

from __future__ import annotations

import os
from pathlib import Path

from transeg.errors import TransegError
from transeg.models.segmentor import Segmentor
from transeg.models.zoo import ZOO, create_model
from transeg.weights import io


def load_model(spec: str | os.PathLike[str], num_classes: int | None = None) -> Segmentor:
    """A model from a zoo name (random weights, ``num_classes`` classes or the variant's default) or
    from any checkpoint ``transeg.weights.io.load_model`` reads, which must then have ``num_classes``
    classes when that is given. Only a ``str`` is looked up in the zoo: a path object is a path."""
    if isinstance(spec, str):
        if spec in ZOO:
            return create_model(spec, num_classes=num_classes)
        if not Path(spec).exists() and "/" not in spec and "." not in spec:
            raise TransegError(f"{spec!r} is neither a model name (see `transeg list`) nor an existing path")
    model = io.load_model(spec)
    if num_classes is not None and num_classes != model.num_classes:
        raise TransegError(f"{spec}: the checkpoint has {model.num_classes} classes, not {num_classes}")
    return model
