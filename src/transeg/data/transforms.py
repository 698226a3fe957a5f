"""Training and test transforms on a sample dict, following the MMSegmentation pipeline.

A sample is ``{"image": (H, W, 3) uint8 RGB, "label": (H, W) integer index map, ...}``; the label
may be absent (inference). Every transform is called as ``t(sample, rng)`` with an
``np.random.Generator``, so a seeded generator reproduces the same augmentation. Images are
resized bilinearly (Pillow, which smooths when shrinking), labels always nearest-neighbour.
``Normalize`` turns the arrays into tensors: image (3, H, W) float32, label (H, W) int64.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

Sample = dict[str, Any]
Size = int | tuple[int, int]


def _hw(size: Size) -> tuple[int, int]:
    """``size`` as (height, width); an int means a square."""
    return (size, size) if isinstance(size, int) else (int(size[0]), int(size[1]))


def _update(sample: Sample, image_fn: Callable, label_fn: Callable) -> Sample:
    """A new sample with ``image_fn`` applied to the image and ``label_fn`` to the label, if any."""
    out = {**sample, "image": image_fn(sample["image"])}
    if sample.get("label") is not None:
        out["label"] = label_fn(sample["label"])
    return out


def rescale_size(h: int, w: int, scale: tuple[int, int]) -> tuple[int, int]:
    """(new_h, new_w) keeping the aspect ratio so that the long edge is at most ``max(scale)``
    and the short edge at most ``min(scale)`` (mmcv ``imrescale``; never below 1 pixel)."""
    factor = min(max(scale) / max(h, w), min(scale) / min(h, w))
    return max(int(h * factor + 0.5), 1), max(int(w * factor + 0.5), 1)


def resize_image(image: np.ndarray, h: int, w: int) -> np.ndarray:
    """(H, W, 3) uint8 → (h, w, 3) uint8, bilinear."""
    if image.shape[:2] == (h, w):
        return image
    return np.asarray(Image.fromarray(image).resize((w, h), Image.BILINEAR))


def resize_label(label: np.ndarray, h: int, w: int) -> np.ndarray:
    """(H, W) index map → (h, w) of the same dtype, nearest neighbour (values are never mixed)."""
    if label.shape == (h, w):
        return label
    mode_array = label if label.dtype == np.uint8 else label.astype(np.int32)
    resized = np.asarray(Image.fromarray(mode_array).resize((w, h), Image.NEAREST))
    return resized.astype(label.dtype, copy=False)


def _resize_sample(sample: Sample, h: int, w: int, resize_label_too: bool = True) -> Sample:
    if not resize_label_too:
        return {**sample, "image": resize_image(sample["image"], h, w)}
    return _update(sample, lambda im: resize_image(im, h, w), lambda lb: resize_label(lb, h, w))


class Compose:
    """Apply transforms in order, all drawing from the same generator."""

    def __init__(self, transforms: Sequence[Callable[[Sample, np.random.Generator], Sample]]) -> None:
        self.transforms = list(transforms)

    def __call__(self, sample: Sample, rng: np.random.Generator) -> Sample:
        for transform in self.transforms:
            sample = transform(sample, rng)
        return sample

    def __repr__(self) -> str:
        return f"Compose({self.transforms!r})"


class RandomResize:
    """Draw r ~ U(ratio_range) and rescale to fit inside (r·max(scale), r·min(scale)), aspect kept."""

    def __init__(self, scale: tuple[int, int] = (2048, 512), ratio_range: tuple[float, float] = (0.5, 2.0)):
        self.scale = scale
        self.ratio_range = ratio_range

    def __call__(self, sample: Sample, rng: np.random.Generator) -> Sample:
        ratio = rng.uniform(*self.ratio_range)
        box = (int(self.scale[0] * ratio), int(self.scale[1] * ratio))
        h, w = sample["image"].shape[:2]
        return _resize_sample(sample, *rescale_size(h, w, box))

    def __repr__(self) -> str:
        return f"RandomResize(scale={self.scale}, ratio_range={self.ratio_range})"


class Resize:
    """Deterministic resize. ``keep_ratio``: fit inside ``scale`` (long, short edge); otherwise
    ``scale`` is the exact (width, height). ``size_divisor`` then rounds H and W up to a multiple
    (the official SegFormer AlignedResize). ``resize_label=False`` keeps the label at its original
    size, as the test protocol evaluates there."""

    def __init__(
        self,
        scale: tuple[int, int],
        keep_ratio: bool = True,
        size_divisor: int | None = None,
        resize_label: bool = True,
    ) -> None:
        self.scale = scale
        self.keep_ratio = keep_ratio
        self.size_divisor = size_divisor
        self.resize_label = resize_label

    def output_size(self, h: int, w: int) -> tuple[int, int]:
        """(new_h, new_w) for an (h, w) input."""
        new_h, new_w = rescale_size(h, w, self.scale) if self.keep_ratio else (self.scale[1], self.scale[0])
        if self.size_divisor:
            d = self.size_divisor
            new_h, new_w = -(-new_h // d) * d, -(-new_w // d) * d
        return new_h, new_w

    def __call__(self, sample: Sample, rng: np.random.Generator) -> Sample:
        new_h, new_w = self.output_size(*sample["image"].shape[:2])
        return _resize_sample(sample, new_h, new_w, self.resize_label)

    def __repr__(self) -> str:
        return (
            f"Resize(scale={self.scale}, keep_ratio={self.keep_ratio}, "
            f"size_divisor={self.size_divisor}, resize_label={self.resize_label})"
        )


class RandomCrop:
    """Random ``size`` (h, w) crop (the whole side when the image is smaller). With
    ``cat_max_ratio`` < 1, redraw up to 10 times until at least two classes are present and none
    covers more than that share of the non-ignored pixels; otherwise keep the last draw (mmseg)."""

    def __init__(self, size: Size, cat_max_ratio: float = 0.75, ignore_index: int = 255) -> None:
        self.size = _hw(size)
        self.cat_max_ratio = cat_max_ratio
        self.ignore_index = ignore_index

    def _draw_box(self, h: int, w: int, rng: np.random.Generator) -> tuple[int, int, int, int]:
        crop_h, crop_w = self.size
        top = int(rng.integers(0, max(h - crop_h, 0) + 1))
        left = int(rng.integers(0, max(w - crop_w, 0) + 1))
        return top, top + crop_h, left, left + crop_w

    def _balanced(self, label: np.ndarray) -> bool:
        values, counts = np.unique(label, return_counts=True)
        counts = counts[values != self.ignore_index]
        return len(counts) > 1 and counts.max() / counts.sum() < self.cat_max_ratio

    def __call__(self, sample: Sample, rng: np.random.Generator) -> Sample:
        h, w = sample["image"].shape[:2]
        y0, y1, x0, x1 = self._draw_box(h, w, rng)
        label = sample.get("label")
        if label is not None and self.cat_max_ratio < 1.0:
            for _ in range(10):
                if self._balanced(label[y0:y1, x0:x1]):
                    break
                y0, y1, x0, x1 = self._draw_box(h, w, rng)
        return _update(sample, lambda im: im[y0:y1, x0:x1], lambda lb: lb[y0:y1, x0:x1])

    def __repr__(self) -> str:
        return f"RandomCrop(size={self.size}, cat_max_ratio={self.cat_max_ratio})"


class RandomFlip:
    """Horizontal flip with probability ``prob``."""

    def __init__(self, prob: float = 0.5) -> None:
        self.prob = prob

    def __call__(self, sample: Sample, rng: np.random.Generator) -> Sample:
        if rng.random() >= self.prob:
            return sample
        return _update(sample, lambda im: im[:, ::-1], lambda lb: lb[:, ::-1])

    def __repr__(self) -> str:
        return f"RandomFlip(prob={self.prob})"


def rgb_to_hsv(rgb: np.ndarray) -> np.ndarray:
    """(..., 3) float RGB in [0, 255] → HSV with H in [0, 360), S in [0, 1], V in [0, 255]."""
    rgb = rgb.astype(np.float32, copy=False)
    r, g, b = rgb[..., 0], rgb[..., 1], rgb[..., 2]
    v = np.maximum(np.maximum(r, g), b)  # elementwise: a reduction over a last axis of 3 is slow
    delta = v - np.minimum(np.minimum(r, g), b)
    safe = np.where(delta > 0, delta, np.float32(1))
    s = delta / np.where(v > 0, v, np.float32(1))
    h = np.where(v == r, ((g - b) / safe) % 6, np.where(v == g, (b - r) / safe + 2, (r - g) / safe + 4))
    h = np.where(delta > 0, h * np.float32(60), np.float32(0))
    return np.stack([h, s, v], -1)


def hsv_to_rgb(hsv: np.ndarray) -> np.ndarray:
    """Inverse of :func:`rgb_to_hsv`: (..., 3) HSV → float32 RGB in [0, 255]. Channel n (5, 3, 1 for
    R, G, B) is V - V S clip(min(k, 4 - k), 0, 1) with k = (n + H / 60) mod 6."""
    h, s, v = hsv[..., 0] / np.float32(60), hsv[..., 1], hsv[..., 2]
    vs = v * s

    def channel(n: int) -> np.ndarray:
        k = (h + np.float32(n)) % 6
        return v - vs * np.clip(np.minimum(k, 4 - k), 0, 1)

    return np.stack([channel(5), channel(3), channel(1)], -1).astype(np.float32, copy=False)


class PhotoMetricDistortion:
    """mmseg PhotoMetricDistortion: brightness, then contrast either first or last (random mode),
    saturation and hue in between, each applied with probability 0.5. ``hue_delta`` is in OpenCV
    units (H in [0, 180)), so 18 means up to ±36 degrees. Computed in float32, clipped after
    each step, returned as uint8."""

    def __init__(
        self,
        brightness_delta: int = 32,
        contrast_range: tuple[float, float] = (0.5, 1.5),
        saturation_range: tuple[float, float] = (0.5, 1.5),
        hue_delta: int = 18,
    ) -> None:
        self.brightness_delta = brightness_delta
        self.contrast_range = contrast_range
        self.saturation_range = saturation_range
        self.hue_delta = hue_delta

    def _contrast(self, img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        if rng.random() < 0.5:
            img = np.clip(img * rng.uniform(*self.contrast_range), 0, 255)
        return img

    def _saturation_hue(self, img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        saturation = rng.uniform(*self.saturation_range) if rng.random() < 0.5 else None
        hue_shift = int(rng.integers(-self.hue_delta, self.hue_delta)) if rng.random() < 0.5 else None
        if saturation is None and hue_shift is None:
            return img
        hsv = rgb_to_hsv(img)
        if saturation is not None:
            hsv[..., 1] = np.clip(hsv[..., 1] * saturation, 0, 1)
        if hue_shift is not None:
            hsv[..., 0] = (hsv[..., 0] + 2 * hue_shift) % 360
        return np.clip(hsv_to_rgb(hsv), 0, 255)

    def __call__(self, sample: Sample, rng: np.random.Generator) -> Sample:
        img = sample["image"].astype(np.float32)
        if rng.random() < 0.5:
            img = np.clip(img + rng.uniform(-self.brightness_delta, self.brightness_delta), 0, 255)
        contrast_first = rng.random() < 0.5
        if contrast_first:
            img = self._contrast(img, rng)
        img = self._saturation_hue(img, rng)
        if not contrast_first:
            img = self._contrast(img, rng)
        return {**sample, "image": np.rint(img).astype(np.uint8)}

    def __repr__(self) -> str:
        return (
            f"PhotoMetricDistortion(brightness_delta={self.brightness_delta}, "
            f"contrast_range={self.contrast_range}, saturation_range={self.saturation_range}, "
            f"hue_delta={self.hue_delta})"
        )


class Normalize:
    """(H, W, 3) uint8 → (3, H, W) float32 tensor ``(x - mean) / std``; label → (H, W) int64 tensor."""

    def __init__(self, mean: Sequence[float], std: Sequence[float]) -> None:
        self.mean = np.asarray(mean, dtype=np.float32)
        self.std = np.asarray(std, dtype=np.float32)

    def __call__(self, sample: Sample, rng: np.random.Generator) -> Sample:
        return _update(sample, self._image, lambda lb: torch.from_numpy(np.array(lb, dtype=np.int64)))

    def _image(self, image: np.ndarray) -> torch.Tensor:
        normalised = (image.astype(np.float32) - self.mean) / self.std
        return torch.from_numpy(np.ascontiguousarray(normalised.transpose(2, 0, 1)))

    def __repr__(self) -> str:
        return f"Normalize(mean={self.mean.tolist()}, std={self.std.tolist()})"


def _pad_bottom_right(
    x: np.ndarray | torch.Tensor, pad_h: int, pad_w: int, value: float
) -> np.ndarray | torch.Tensor:
    """Pad the spatial dims: the first two of an (H, W[, C]) array, the last two of a tensor."""
    if isinstance(x, torch.Tensor):
        return F.pad(x, (0, pad_w, 0, pad_h), value=value)
    widths = [(0, pad_h), (0, pad_w)] + [(0, 0)] * (x.ndim - 2)
    return np.pad(x, widths, constant_values=value)


class Pad:
    """Pad bottom/right to at least ``size`` (h, w): image with ``pad_val``, label with
    ``seg_pad_val``. Works before ``Normalize`` (arrays) or after it (tensors; mmseg pads the
    normalised image, so ``pad_val=0`` is then the mean colour)."""

    def __init__(self, size: Size, pad_val: float = 0, seg_pad_val: int = 255) -> None:
        self.size = _hw(size)
        self.pad_val = pad_val
        self.seg_pad_val = seg_pad_val

    def __call__(self, sample: Sample, rng: np.random.Generator) -> Sample:
        image = sample["image"]
        h, w = image.shape[-2:] if isinstance(image, torch.Tensor) else image.shape[:2]
        pad_h, pad_w = max(self.size[0] - h, 0), max(self.size[1] - w, 0)
        if pad_h == pad_w == 0:
            return sample
        return _update(
            sample,
            lambda im: _pad_bottom_right(im, pad_h, pad_w, self.pad_val),
            lambda lb: _pad_bottom_right(lb, pad_h, pad_w, self.seg_pad_val),
        )

    def __repr__(self) -> str:
        return f"Pad(size={self.size}, pad_val={self.pad_val}, seg_pad_val={self.seg_pad_val})"


def train_transforms(
    crop_size: Size,
    scale: tuple[int, int],
    ratio_range: tuple[float, float],
    mean: Sequence[float],
    std: Sequence[float],
    cat_max_ratio: float = 0.75,
) -> Compose:
    """The SegFormer/mmseg training pipeline: resize, crop, flip, photometric, normalise, pad."""
    return Compose(
        [
            RandomResize(scale, ratio_range),
            RandomCrop(crop_size, cat_max_ratio),
            RandomFlip(0.5),
            PhotoMetricDistortion(),
            Normalize(mean, std),
            Pad(crop_size),
        ]
    )


def eval_transforms(
    scale: tuple[int, int], mean: Sequence[float], std: Sequence[float], size_divisor: int | None = None
) -> Compose:
    """Single-scale test pipeline: keep-ratio resize of the image only (the label stays at the
    original size, where predictions are evaluated), then normalise."""
    return Compose([Resize(scale, True, size_divisor, resize_label=False), Normalize(mean, std)])


