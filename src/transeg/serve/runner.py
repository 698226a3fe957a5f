"""The model call behind the service: a batch of same-size images to label maps, as ``predict`` labels them."""

from __future__ import annotations

import numpy as np
import torch

from transeg.inference.backends import InferenceModel
from transeg.inference.modes import logits_to_labels, normalize, whole_logits


class LabelRunner:
    """``runner([image, ...])`` -> one (H, W) label map per (H, W, 3) uint8 RGB image, all of one size:
    whole-image inference as ``Predictor(mode="whole")`` runs it, one model call for the batch."""

    def __init__(self, model: InferenceModel, device: str = "cpu") -> None:
        self.model, self.device = model, torch.device(device)
        self.mean, self.std = tuple(model.config.mean), tuple(model.config.std)

    def __call__(self, images: list[np.ndarray]) -> list[np.ndarray]:
        """B images (H, W, 3) -> B label maps (H, W), uint8 for up to 256 classes else int64."""
        x = torch.cat([normalize(image, self.mean, self.std) for image in images]).to(self.device)
        with torch.inference_mode():
            logits = whole_logits(self.model, x)  # (B, K, H, W)
            labels = logits_to_labels(logits).cpu().numpy()
        dtype = np.uint8 if logits.shape[1] <= 256 else np.int64
        return [label.astype(dtype) for label in labels]
