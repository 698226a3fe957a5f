"""Class paste: each training crop of a batch receives the pixels of a few chosen classes (thin or
rare ones), with their labels, from the previous crop of the batch, so that those classes are seen
more often and against other surroundings (copy-paste augmentation on the label masks, as ClassMix,
Olsson et al. 2021, mixes whole classes between two images)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from transeg.data.sampling import collate
from transeg.errors import TransegError


def paste_classes(image: torch.Tensor, label: torch.Tensor, classes: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(B, C, H, W) images and (B, H, W) labels -> the same with crop i's pixels replaced, wherever crop
    i-1 (crop B-1 for crop 0) is labelled with one of ``classes``, by that crop's image and label.
    A batch of one is returned as it is."""
    if image.shape[0] < 2:
        return image, label
    source_image, source_label = image.roll(1, dims=0), label.roll(1, dims=0)
    where = torch.isin(source_label, classes)
    return torch.where(where[:, None], source_image, image), torch.where(where, source_label, label)


def class_indices(names: Sequence[str], classes: Sequence[str], key: str) -> list[int]:
    """The indices in ``classes`` of the class ``names``; a name that is not a class is a TransegError
    naming the config ``key``, the name and the classes."""
    unknown = [name for name in names if name not in classes]
    if unknown:
        raise TransegError(f"{key}: {unknown[0]!r} is not a class of the dataset ({', '.join(classes)})")
    return [list(classes).index(name) for name in names]


class ClassPasteCollate:
    """A DataLoader ``collate_fn``: ``collate`` the samples, then ``paste_classes`` of ``classes``."""

    def __init__(self, classes: Sequence[int]) -> None:
        self.classes = torch.tensor(list(classes), dtype=torch.int64)

    def __call__(self, samples: list[dict[str, Any]]) -> dict[str, Any]:
        batch = collate(samples)
        batch["image"], batch["label"] = paste_classes(batch["image"], batch["label"], self.classes)
        return batch
