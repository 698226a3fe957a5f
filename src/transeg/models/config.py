"""ModelConfig: everything needed to rebuild a model, stored as JSON beside its weights. A leaf module:
parsing a config back, which needs the table of encoder and decoder configs, is ``factory``'s job."""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from typing import Any

IMAGENET_MEAN = (123.675, 116.28, 103.53)
IMAGENET_STD = (58.395, 57.12, 57.375)


@dataclass(frozen=True)
class ModelConfig:
    """A whole segmentation model. ``mean``/``std`` normalise 0-255 RGB input."""

    encoder: str
    encoder_config: Any
    decoder: str
    decoder_config: Any
    num_classes: int
    name: str = "custom"
    mean: tuple[float, ...] = IMAGENET_MEAN
    std: tuple[float, ...] = IMAGENET_STD
    class_names: tuple[str, ...] | None = None
    palette: tuple[tuple[int, int, int], ...] | None = None  # RGB per class, for label PNGs and overlays

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict())
