"""Inference: whole-image, sliding-window and multi-scale + flip prediction at input resolution.

The functions take a model mapping (B, 3, h, w) normalised images to (B, K, h', w') logits at
any output stride, and return (B, K, H, W) maps at the input's size. They do not switch the model
to eval mode or disable autograd; ``Predictor`` does both.

Any input size works: every model call goes through ``padded_forward``, which zero-pads an input
smaller than the model's declared ``min_input_size`` (MiT: 29) at the bottom and right, and crops
the logits back. Zero after normalisation is the mean colour: the value the encoders' own padding
feeds (ViT and Swin zero-pad their normalised input, every padded convolution pads with zeros), so
the padding adds no content. Reflection would: a 3-pixel strip mirrored up to 29 pixels is a new
texture the global attention averages over, and it cannot pad a 1-pixel side at all.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from math import ceil

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from transeg.errors import TransegError
from transeg.inference.backends import InferenceModel
from transeg.models.layers.resize import resize

MODES = ("whole", "slide", "ms-flip")
MS_SCALES = (0.5, 0.75, 1.0, 1.25, 1.5, 1.75)


def _resize(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Bilinear (align_corners=False) resize of (B, C, h, w) to ``size``; a no-op at the same size."""
    return x if tuple(x.shape[-2:]) == tuple(size) else resize(x, size)


def _positive_int(name: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise TransegError(f"{name} must be a positive integer, got {value!r}")
    return int(value)


def _pair(name: str, value: int | Sequence[int]) -> tuple[int, int]:
    """An int or (h, w) pair of positive ints as (h, w)."""
    if isinstance(value, (int, np.integer)) and not isinstance(value, bool):
        value = (value, value)
    if not isinstance(value, Sequence) or len(value) != 2:
        raise TransegError(f"{name} must be an int or an (h, w) pair, got {value!r}")
    return _positive_int(name, value[0]), _positive_int(name, value[1])


def _check_window(crop: int | Sequence[int], stride: int | Sequence[int]) -> tuple[tuple[int, int], ...]:
    crop, stride = _pair("crop", crop), _pair("stride", stride)
    if stride[0] > crop[0] or stride[1] > crop[1]:
        raise TransegError(f"stride {stride} exceeds crop {crop}: sliding windows would leave gaps")
    return crop, stride


def normalize(image: np.ndarray, mean: Sequence[float], std: Sequence[float]) -> torch.Tensor:
    """(H, W, C) image -> (1, C, H, W) float32 ``(image - mean) / std``, C == len(mean): uint8 RGB with
    mean/std on 0-255, or N != 3 bands of any numeric dtype with per-band mean/std on their values."""
    bands = len(mean)
    numeric = isinstance(image, np.ndarray) and (
        image.dtype == np.uint8 if bands == 3 else image.dtype.kind in "uif")  # 3 bands: RGB images only
    if not numeric or image.ndim != 3 or image.shape[2] != bands:
        desc = f"{image.dtype} {image.shape}" if isinstance(image, np.ndarray) else type(image).__name__
        what = "uint8 RGB image" if bands == 3 else f"image of {bands} bands"
        raise TransegError(f"expected an (H, W, {bands}) {what}, got {desc}")
    if not image.flags.writeable:  # e.g. a resized or decoded view: torch warns on read-only arrays
        image = image.copy()
    x = torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1).float()
    mean_t = torch.tensor(mean, dtype=torch.float32).view(bands, 1, 1)
    std_t = torch.tensor(std, dtype=torch.float32).view(bands, 1, 1)
    return ((x - mean_t) / std_t).unsqueeze(0)


def padded_forward(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """``model(x)`` for (B, 3, h, w) of any size: logits (B, K, h', w') at the model's stride, or,
    when h or w is below the model's ``min_input_size`` (1 for a model declaring none), (B, K, h, w)
    logits of ``x`` zero-padded at the bottom and right to that size, resized (bilinear,
    align_corners=False) to the padded size and cropped back to (h, w)."""
    least = getattr(model, "min_input_size", 1)
    h, w = x.shape[-2], x.shape[-1]
    if h >= least and w >= least:
        return model(x)
    padded = F.pad(x, (0, max(least - w, 0), 0, max(least - h, 0)))
    return _resize(model(padded), (padded.shape[-2], padded.shape[-1]))[..., :h, :w]


def whole_logits(model: nn.Module, x: torch.Tensor, size_divisor: int | None = None) -> torch.Tensor:
    """(B, 3, H, W) -> (B, K, H, W) logits from one forward pass over the whole image.

    With ``size_divisor`` the input is first resized (bilinear) so that H and W are multiples of
    it, rounding up as SegFormer's ``AlignedResize`` does.
    """
    size = (x.shape[-2], x.shape[-1])
    if size_divisor is not None:
        d = _positive_int("size_divisor", size_divisor)
        x = _resize(x, (ceil(size[0] / d) * d, ceil(size[1] / d) * d))
    return _resize(padded_forward(model, x), size)


def _spans(size: int, crop: int, stride: int) -> list[tuple[int, int]]:
    """Window [start, end) along one axis: every ``stride``, the last shifted inward to end at ``size``."""
    grids = max(size - crop + stride - 1, 0) // stride + 1
    return [(max(min(i * stride + crop, size) - crop, 0), min(i * stride + crop, size)) for i in range(grids)]


def slide_bands(model: nn.Module, rows: Callable[[int, int], torch.Tensor], size: tuple[int, int],
                crop: int | Sequence[int], stride: int | Sequence[int],
                batch_size: int = 4) -> Iterator[tuple[int, torch.Tensor]]:
    """Sliding-window logits of an (H, W) image, band by band: yields ``(y, logits)``, logits
    (B, K, r, W) for rows y..y+r, top to bottom, each band as soon as no later window covers it.

    ``rows(y1, y2)`` gives the normalised input rows (B, C, y2 - y1, W). Windows are those of
    ``slide_logits``, run a window row at a time; the logit sums and window counts live in one
    window-high (B, K, crop_h, W) buffer, so memory depends on the window and W, not on H.
    """
    (h_crop, w_crop), (h_stride, w_stride) = _check_window(crop, stride)
    batch_size = _positive_int("batch_size", batch_size)
    h, w = size
    row_spans, col_spans = _spans(h, h_crop, h_stride), _spans(w, w_crop, w_stride)
    window = (min(h_crop, h), min(w_crop, w))  # every window has this size
    logits: torch.Tensor | None = None
    count: torch.Tensor | None = None
    top = 0  # the image row at the buffer's row 0
    for i, (y1, y2) in enumerate(row_spans):
        strip = rows(y1, y2)
        if count is None:
            count = strip.new_zeros((1, 1, window[0], w))
        _shift_up(count, y1 - top)
        if logits is not None:
            _shift_up(logits, y1 - top)
        top = y1
        for start in range(0, len(col_spans), batch_size):
            chunk = col_spans[start:start + batch_size]
            crops = torch.cat([strip[..., x1:x2] for x1, x2 in chunk])
            out = _resize(padded_forward(model, crops), window).split(strip.shape[0])
            if logits is None:
                logits = out[0].new_zeros((strip.shape[0], out[0].shape[1], window[0], w))
            for (x1, x2), part in zip(chunk, out, strict=True):
                logits[:, :, :, x1:x2] += part
                count[:, :, :, x1:x2] += 1
        done = row_spans[i + 1][0] if i + 1 < len(row_spans) else h  # rows above are final
        if done > top:
            assert logits is not None
            yield top, logits[:, :, :done - top] / count[:, :, :done - top]


def _shift_up(buffer: torch.Tensor, rows: int) -> None:
    """Move (..., R, W) ``buffer`` up by ``rows`` in place, zeroing the rows freed at the bottom."""
    if rows <= 0:
        return
    keep = buffer.shape[-2] - rows
    for r in range(0, keep, rows):  # blocks of at most ``rows`` rows never overlap their source
        n = min(rows, keep - r)
        buffer[..., r:r + n, :] = buffer[..., r + rows:r + rows + n, :]
    buffer[..., max(keep, 0):, :] = 0


def slide_logits(model: nn.Module, x: torch.Tensor, crop: int | Sequence[int],
                 stride: int | Sequence[int], batch_size: int = 4) -> torch.Tensor:
    """(B, C, H, W) -> (B, K, H, W) logits averaged over overlapping (crop) windows (mmseg 'slide').

    Windows start every ``stride``; the last ones are shifted inward to end at the border (no
    padding). A crop larger than the image shrinks to it. Each window's logits are resized to
    the window, summed and divided by the per-pixel window count (``slide_bands``, whose bands
    this joins). ``batch_size`` windows of a window row go through the model at once.
    """
    size = (x.shape[-2], x.shape[-1])
    bands = [band for _, band in slide_bands(model, lambda y1, y2: x[:, :, y1:y2], size, crop, stride, batch_size)]
    return torch.cat(bands, dim=2)


def _probs(logits: torch.Tensor) -> torch.Tensor:
    """Softmax over classes; sigmoid for a single (binary) channel."""
    return torch.sigmoid(logits) if logits.shape[1] == 1 else logits.softmax(dim=1)


def ms_flip_probs(model: nn.Module, x: torch.Tensor, scales: Sequence[float] = MS_SCALES,
                  flip: bool = True, mode: str = "whole", crop: int | Sequence[int] | None = None,
                  stride: int | Sequence[int] | None = None, size_divisor: int | None = None,
                  batch_size: int = 4) -> torch.Tensor:
    """(B, 3, H, W) -> (B, K, H, W) class probabilities averaged over scales and flips.

    At each scale the input is resized by that ratio, its logits computed by ``mode`` ('whole'
    or 'slide') and resized back to (H, W), then softmaxed (sigmoid for K == 1). With ``flip``
    each scale also runs on the horizontally flipped input, flipping the output back.
    """
    if mode == "whole":
        def base(inp: torch.Tensor) -> torch.Tensor:
            return whole_logits(model, inp, size_divisor)
    elif mode == "slide":
        if crop is None or stride is None or size_divisor is not None:
            raise TransegError("ms-flip with slide windows needs crop and stride, and no size_divisor")
        def base(inp: torch.Tensor) -> torch.Tensor:
            return slide_logits(model, inp, crop, stride, batch_size)
    else:
        raise TransegError(f"unknown ms-flip base mode {mode!r} (use 'whole' or 'slide')")
    size = (x.shape[-2], x.shape[-1])
    total: torch.Tensor | None = None
    runs = 0
    for scale in _check_scales(scales):
        scaled = _resize(x, (max(int(size[0] * scale + 0.5), 1), max(int(size[1] * scale + 0.5), 1)))
        for flipped in (False, True) if flip else (False,):
            inp = scaled.flip(-1) if flipped else scaled
            logits = base(inp)
            probs = _probs(_resize(logits.flip(-1) if flipped else logits, size))
            total = probs if total is None else total + probs
            runs += 1
    assert total is not None
    return total / runs


def _check_scales(scales: Sequence[float]) -> tuple[float, ...]:
    try:
        values = tuple(float(s) for s in scales)
    except (TypeError, ValueError):
        raise TransegError(f"scales must be a sequence of positive numbers, got {scales!r}") from None
    if not values or min(values) <= 0:
        raise TransegError(f"scales must be a non-empty sequence of positive numbers, got {scales!r}")
    return values


def passes_per_image(mode: str, scales: Sequence[float], flip: bool) -> int:
    """How many times ``Predictor`` runs the model over each image in ``mode`` (its slide windows not
    counted): once, or once per scale, twice with ``flip``, in ms-flip mode."""
    return len(scales) * (2 if flip else 1) if mode == "ms-flip" else 1


def logits_to_labels(logits: torch.Tensor) -> torch.Tensor:
    """(B, K, H, W) -> (B, H, W) int64 labels: argmax over classes, or ``logit > 0`` when K == 1."""
    if logits.shape[1] == 1:
        return (logits[:, 0] > 0).long()
    return logits.argmax(dim=1)


class Predictor:
    """Segments (H, W, C) images (uint8 RGB, or the bands ``model.config.mean`` has) at their own resolution.

    ``mode``: 'whole' (one pass, optionally resized to multiples of ``size_divisor``), 'slide'
    (``crop``/``stride`` windows) or 'ms-flip' (``scales`` and ``flip``, each scale run whole, or
    by slide windows when ``crop`` and ``stride`` are given). The model is put in eval mode on
    ``device`` and fed images normalised with ``model.config.mean``/``std``; images (or windows,
    or scaled images) smaller than ``model.min_input_size`` are zero-padded (``padded_forward``).
    """

    def __init__(self, model: InferenceModel, mode: str = "whole", crop: int | Sequence[int] | None = None,
                 stride: int | Sequence[int] | None = None, scales: Sequence[float] = MS_SCALES,
                 flip: bool = True, size_divisor: int | None = None, batch_size: int = 4,
                 device: str | torch.device = "cpu", max_whole_pixels: int = 4096 * 4096) -> None:
        if mode not in MODES:
            raise TransegError(f"unknown inference mode {mode!r} (known: {', '.join(MODES)})")
        if (crop is None) != (stride is None):
            raise TransegError("crop and stride must be given together")
        if mode == "slide" and crop is None:
            raise TransegError("slide inference needs crop and stride")
        if mode == "whole" and crop is not None:
            raise TransegError("crop/stride apply to 'slide' or 'ms-flip' inference, not 'whole'")
        self.window = _check_window(crop, stride) if crop is not None else None
        if size_divisor is not None:
            if self.window is not None:
                raise TransegError("size_divisor applies to whole-image inference, not slide windows")
            size_divisor = _positive_int("size_divisor", size_divisor)
        if not isinstance(model, InferenceModel):
            raise TransegError("the model lacks what inference reads: a config with mean/std to normalise images, "
                               "num_classes and min_input_size")
        config = model.config
        try:
            self.device = torch.device(device)
            self.model = model.to(self.device).eval()
        except (RuntimeError, TypeError, AssertionError) as exc:
            raise TransegError(f"cannot use device {device!r}: {exc}".splitlines()[0]) from None
        self.mode = mode
        self.scales = _check_scales(scales)
        self.flip = bool(flip)
        self.size_divisor = size_divisor
        self.batch_size = _positive_int("batch_size", batch_size)
        self.max_whole_pixels = max_whole_pixels
        self.mean, self.std = tuple(config.mean), tuple(config.std)

    def predict_logits(self, image: np.ndarray) -> torch.Tensor:
        """(H, W, C) image -> (1, K, H, W) float logits on ``device``.

        For 'ms-flip' these are the log of the averaged probabilities (their logit for K == 1), so
        that softmax (sigmoid) gives those probabilities back.
        """
        return self._checked_logits(normalize(image, self.mean, self.std))

    def predict_batch(self, images: Sequence[np.ndarray]) -> np.ndarray:
        """B (H, W, 3) uint8 RGB images of one size -> (B, H, W) labels (dtype as ``predict``), the B
        images going through the model together (video frames)."""
        if len({image.shape for image in images}) != 1:
            raise TransegError("a batch of images must share one size")
        logits = self._checked_logits(torch.cat([normalize(image, self.mean, self.std) for image in images]))
        labels = logits_to_labels(logits).cpu().numpy()
        return labels.astype(np.uint8) if logits.shape[1] <= 256 else labels

    def _checked_logits(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) normalised on the CPU -> (B, K, H, W) logits on ``device``; too large an image
        for whole-image inference, or running out of memory, is a TransegError saying what to do."""
        h, w = x.shape[-2:]
        if self.window is None and h * w > self.max_whole_pixels:
            raise TransegError(
                f"a {w}x{h} image ({h * w / 1e6:.0f} Mpx) is too large for whole-image inference (limit "
                f"{self.max_whole_pixels / 1e6:.0f} Mpx): use slide mode, e.g. --mode slide --crop 1024 1024 "
                "--stride 768 768, whose activations stay the size of one batch of windows")
        x = x.to(self.device)
        try:
            with torch.inference_mode():
                return self._logits(x)
        except (torch.OutOfMemoryError, RuntimeError) as exc:
            if "memory" not in str(exc) and "allocate" not in str(exc):
                raise
            raise TransegError(f"out of memory on a {w}x{h} image in {self.mode} mode: use slide mode with a "
                               "smaller --crop or --batch-size") from None

    def _logits(self, x: torch.Tensor) -> torch.Tensor:
        if self.mode == "whole":
            return whole_logits(self.model, x, self.size_divisor)
        if self.mode == "slide":
            return slide_logits(self.model, x, *self.window, self.batch_size)
        crop, stride = self.window or (None, None)
        probs = ms_flip_probs(self.model, x, self.scales, self.flip, "whole" if self.window is None else "slide",
                              crop, stride, self.size_divisor, self.batch_size)
        return torch.logit(probs) if probs.shape[1] == 1 else probs.log()

    def predict(self, image: np.ndarray) -> np.ndarray:
        """(H, W, C) image -> (H, W) class labels, uint8 for up to 256 classes else int64. Slide mode
        turns each band of finished rows into labels at once (``predict_bands``): no (K, H, W) map."""
        if self.mode == "slide":
            return np.concatenate(list(self.predict_bands(lambda y1, y2: image[y1:y2], image.shape[:2])))
        return self._labels(self.predict_logits(image))

    def predict_with_probs(self, image: np.ndarray) -> tuple[np.ndarray, torch.Tensor]:
        """(H, W, C) image -> the (H, W) labels of ``predict`` and the (K, H, W) float class
        probabilities they are the argmax of (softmax; sigmoid for K == 1)."""
        logits = self.predict_logits(image)
        return self._labels(logits), _probs(logits)[0]

    def predict_bands(self, rows: Callable[[int, int], np.ndarray], size: tuple[int, int]) -> Iterator[np.ndarray]:
        """Slide-mode labels of an (H, W) image, band by band: ``rows(y1, y2)`` reads (y2 - y1, W, C)
        image rows; yields (r, W) label rows, top to bottom. Memory: one window row of logits."""
        if self.mode != "slide":
            raise TransegError(f"band-by-band prediction needs slide mode, not {self.mode!r}")
        assert self.window is not None

        def normalised(y1: int, y2: int) -> torch.Tensor:
            return normalize(rows(y1, y2), self.mean, self.std).to(self.device)

        bands = slide_bands(self.model, normalised, size, *self.window, self.batch_size)
        while True:
            with torch.inference_mode():  # entered per band: a suspended generator must not hold it
                item = next(bands, None)
                if item is None:
                    return
                labels = self._labels(item[1])
            yield labels

    @staticmethod
    def _labels(logits: torch.Tensor) -> np.ndarray:
        labels = logits_to_labels(logits)[0].cpu().numpy()
        return labels.astype(np.uint8) if logits.shape[1] <= 256 else labels
