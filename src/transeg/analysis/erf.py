"""Effective receptive fields (Luo et al., 2016), as in SegFormer's Figure 3.

The ERF of an output unit is the gradient of that unit with respect to the input image. For each
encoder stage the unit is the centre position (h // 2, w // 2) of the stage's (B, C, h, w) feature
map; for the head it is the centre pixel of the (B, K, h', w') logits (as ``Segmentor.forward``
returns them). The unit's C channels (K classes) are summed after a ReLU, y = sum_c max(y_c, 0):
a plain sum would cancel, exactly so for the LayerNorm that ends every MiT stage (its outputs sum
to zero over channels while its weight is still 1, as at initialisation), and the logits' sum is
the one direction the softmax ignores. The gradient of y with respect to the normalised
(1, 3, H, W) input is taken in absolute value, summed over the 3 input channels and averaged over
the images: one (H, W) map per stage and one for the head.

Each map is summarised by the radii, in input pixels, of the smallest discs about its centre of mass
that hold 50% and 90% of the gradient mass (``mass_radii``): a local ERF has small radii, a
non-local one radii of the order of the image; and by its peak-to-mean ratio, large for a sharp
local peak. Figures show each map divided by its maximum, on a log10 scale over ``decades``
decades (or a square-root scale).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from transeg.data.images import read_image
from transeg.data.transforms import resize_image
from transeg.errors import TransegError
from transeg.inference.modes import normalize
from transeg.models.segmentor import Segmentor

SCALES = ("log", "sqrt")
MAX_PIXELS = 4096 * 4096


@dataclass
class ERFResult:
    """Averaged ERF maps, (H, W) float64 each, in output order: the stages, then the head."""

    names: list[str]  # file-name keys: stage1 … stageN, head
    titles: list[str]  # figure titles: Stage-1 … Stage-N, Head
    maps: list[np.ndarray]
    feature_sizes: list[tuple[int, int]]  # (h, w) of each output map
    size: tuple[int, int]  # the input (H, W)
    images: int = 0
    summaries: list[dict[str, Any]] = field(default_factory=list)


@contextmanager
def _frozen(model: torch.nn.Module) -> Iterator[None]:
    """Parameters without requires_grad (restored after), the model in eval mode (restored after)."""
    flags = [(p, p.requires_grad) for p in model.parameters()]
    was_training = model.training
    for p, _ in flags:
        p.requires_grad_(False)
    model.eval()
    try:
        yield
    finally:
        for p, flag in flags:
            p.requires_grad_(flag)
        model.train(was_training)


def check_size(size: Sequence[int], min_side: int = 32, what: str = "the ERF input size") -> tuple[int, int]:
    """(H, W) as ints, each at least ``min_side`` (the coarsest stride), at most 16 Mpx in all;
    ``what`` names the size in the error."""
    if len(size) != 2 or any(isinstance(v, bool) or not isinstance(v, (int, np.integer)) for v in size):
        raise TransegError(f"{what} must be two integers H W, got {tuple(size)!r}")
    h, w = int(size[0]), int(size[1])
    if min(h, w) < min_side:
        raise TransegError(f"{what} {h}x{w} is too small: each side must be at least {min_side} "
                           "pixels (the model's coarsest stride)")
    if h * w > MAX_PIXELS:
        raise TransegError(f"{what} {h}x{w} is too large (at most {MAX_PIXELS // 10**6} Mpx)")
    return h, w


def prepare_image(image: np.ndarray, size: tuple[int, int], mean: Sequence[float],
                  std: Sequence[float]) -> torch.Tensor:
    """(H0, W0, 3) uint8 RGB -> (1, 3, H, W) float32, resized (bilinear) to ``size`` and normalised."""
    return normalize(np.array(resize_image(image, *size)), mean, std)  # a writable copy for torch


def output_maps(model: Segmentor, x: torch.Tensor) -> list[torch.Tensor]:
    """(B, 3, H, W) -> the encoder's (B, C_i, h_i, w_i) maps followed by the (B, K, h', w') logits,
    computed as ``Segmentor.forward`` computes them."""
    features = model.encoder(x)
    logits = model.unpad(model.decoder(features), x.shape[-2:])
    return [*features, logits]


def centre_index(h: int, w: int) -> tuple[int, int]:
    """The centre position of an (h, w) map: (h // 2, w // 2)."""
    return h // 2, w // 2


def image_gradients(model: Segmentor, x: torch.Tensor) -> tuple[list[np.ndarray], list[tuple[int, int]]]:
    """(1, 3, H, W) normalised image -> one (H, W) map per output (stages, then head): |d y / d x|
    summed over input channels, y being the sum over channels of the ReLU of the output's centre
    position; and the (h, w) size of each output. The model is expected frozen and in eval mode."""
    x = x.detach().clone().requires_grad_(True)
    outputs = output_maps(model, x)
    grads, sizes = [], []
    for k, out in enumerate(outputs):
        h, w = out.shape[-2:]
        i, j = centre_index(h, w)
        target = out[0, :, i, j].relu().sum()
        (grad,) = torch.autograd.grad(target, x, retain_graph=k < len(outputs) - 1)
        grads.append(grad[0].abs().sum(0).double().cpu().numpy())
        sizes.append((int(h), int(w)))
    return grads, sizes


def mass_radii(erf: np.ndarray, fractions: Sequence[float] = (0.5, 0.9)) -> dict[str, Any]:
    """(H, W) non-negative map -> its centre of mass (y, x) and, per fraction q, the radius (input
    pixels) of the smallest disc about that centre holding at least q of the total mass."""
    total = float(erf.sum())
    if not np.isfinite(total) or total <= 0:  # no gradient at all: nothing to summarise
        return {"centroid_px": None, **{f"radius_{round(q * 100)}_px": None for q in fractions}}
    ys, xs = np.indices(erf.shape, dtype=np.float64)
    cy, cx = float((ys * erf).sum() / total), float((xs * erf).sum() / total)
    dist = np.hypot(ys - cy, xs - cx).ravel()
    order = np.argsort(dist, kind="stable")
    cumulative = np.cumsum(erf.ravel()[order]) / total
    out: dict[str, Any] = {"centroid_px": [round(cy, 2), round(cx, 2)]}
    for q in fractions:
        index = min(int(np.searchsorted(cumulative, q - 1e-12)), len(order) - 1)
        out[f"radius_{round(q * 100)}_px"] = round(float(dist[order[index]]), 2)
    return out


def summarize_map(erf: np.ndarray) -> dict[str, Any]:
    """``mass_radii`` (50% and 90%) and the peak-to-mean ratio of an (H, W) map: how much its maximum
    stands out, large for a sharp local peak (SegFormer's head over Stage-4)."""
    mean = float(erf.mean())
    return {**mass_radii(erf), "peak_to_mean": round(float(erf.max()) / mean, 1) if mean > 0 else None}


def compute_erf(model: Segmentor, images: Iterable[torch.Tensor], count: int | None = None,
                show_progress: bool = True) -> ERFResult:
    """Average the per-image gradient maps of ``images`` ((1, 3, H, W) normalised tensors of one
    size) for every encoder stage and the head; ``count`` sizes the progress bar."""
    total: list[np.ndarray] | None = None
    sizes: list[tuple[int, int]] = []
    n, size = 0, (0, 0)
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn())
    with _frozen(model), Progress(*columns, transient=True,
                                  disable=not show_progress or (count or 0) < 2) as progress:
        task = progress.add_task("ERF", total=count)
        for x in images:
            grads, sizes = image_gradients(model, x)
            total = grads if total is None else [t + g for t, g in zip(total, grads, strict=True)]
            size = (int(x.shape[-2]), int(x.shape[-1]))
            n += 1
            progress.advance(task)
    if total is None:
        raise TransegError("no images to compute the effective receptive field on")
    stages = len(total) - 1
    names = [f"stage{i + 1}" for i in range(stages)] + ["head"]
    titles = [f"Stage-{i + 1}" for i in range(stages)] + ["Head"]
    maps = [t / n for t in total]
    return ERFResult(names, titles, maps, sizes, size, n, [summarize_map(m) for m in maps])


def erf_of_files(model: Segmentor, paths: Sequence[Path], size: tuple[int, int] = (512, 512),
                 show_progress: bool = True) -> ERFResult:
    """The ERF maps of ``model`` averaged over the image files ``paths``, each resized to ``size``
    (H, W) and normalised with the model's mean and std, on the model's device."""
    if not paths:
        raise TransegError("no images given for the effective receptive field")
    strides = getattr(model.encoder, "strides", None) or (32,)
    size = check_size(size, max(32, *strides))
    mean, std = model.config.mean, model.config.std
    device = next(model.parameters()).device
    images = (prepare_image(read_image(p), size, mean, std).to(device) for p in paths)
    return compute_erf(model, images, len(paths), show_progress)


def display_map(erf: np.ndarray, scale: str = "log", decades: float = 3.0) -> np.ndarray:
    """(H, W) map -> (H, W) values in [0, 1]: divided by its maximum, then log10 over ``decades``
    decades (1e-decades and below -> 0) or square root."""
    if scale not in SCALES:
        raise TransegError(f"unknown ERF display scale {scale!r} (known: {', '.join(SCALES)})")
    peak = float(erf.max())
    norm = erf / peak if peak > 0 else np.zeros_like(erf)
    if scale == "sqrt":
        return np.sqrt(norm)
    return np.clip(1 + np.log10(np.maximum(norm, 10.0 ** -decades)) / decades, 0.0, 1.0)


def _pyplot():
    try:
        import matplotlib
    except ImportError:
        raise TransegError("ERF figures need matplotlib: pip install 'transeg[analysis]'") from None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def scale_label(scale: str, decades: float = 3.0) -> str:
    return f"log10(|grad| / max), {decades:g} decades" if scale == "log" else "sqrt(|grad| / max)"


def _radii_label(summary: dict[str, Any]) -> str:
    r50, r90 = summary["radius_50_px"], summary["radius_90_px"]
    return "no gradient" if r50 is None else f"r50 {r50:.0f} px   r90 {r90:.0f} px"


def save_figure(result: ERFResult, path: Path, scale: str = "log", title: str = "", cmap: str = "inferno",
                decades: float = 3.0) -> Path:
    """A row of heatmaps (Stage-1 … Stage-N, Head) with their 50%/90% radii, one colour bar."""
    plt = _pyplot()
    h, w = result.size
    n = len(result.maps)
    panel = 2.6
    fig, axes = plt.subplots(1, n, figsize=(panel * n + 0.8, panel * h / w + 0.9), dpi=100, squeeze=False)
    image = None
    for ax, erf, name, summary in zip(axes[0], result.maps, result.titles, result.summaries, strict=True):
        image = ax.imshow(display_map(erf, scale, decades), cmap=cmap, vmin=0, vmax=1, interpolation="nearest")
        ax.set_title(name, fontsize=10)
        ax.set_xlabel(_radii_label(summary), fontsize=8)
        ax.set_xticks([])
        ax.set_yticks([])
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout(rect=(0, 0, 0.94, 1))
    bar = fig.colorbar(image, ax=list(axes[0]), fraction=0.012, pad=0.01)
    if scale == "log":
        bar.set_ticks(np.linspace(0, 1, int(decades) + 1))
        bar.set_ticklabels([f"1e-{int(decades) - k}" if k < decades else "1" for k in range(int(decades) + 1)])
    bar.ax.tick_params(labelsize=7)
    bar.set_label(scale_label(scale, decades), fontsize=7)
    fig.savefig(path)
    plt.close(fig)
    return path


def save_heatmap(erf: np.ndarray, path: Path, scale: str = "log", cmap: str = "inferno",
                 decades: float = 3.0) -> Path:
    """One map as an (H, W) colour image, pixel for input pixel, on the figure's scale."""
    _pyplot().imsave(path, display_map(erf, scale, decades), cmap=cmap, vmin=0, vmax=1)
    return path


def summary(result: ERFResult, model_name: str = "", scale: str = "log", decades: float = 3.0,
            source: str | None = None) -> dict[str, Any]:
    """What ``erf.json`` holds: the setting and, per map, its output size, centre and radii."""
    return {
        "model": model_name,
        **({"source": source} if source else {}),
        "size": list(result.size),
        "images": result.images,
        "gradient": "|d(sum over channels of ReLU(the output's centre position)) / d(normalised input)|, "
                    "summed over input channels, averaged over images",
        "radii": "smallest disc about the map's centre of mass holding 50% / 90% of the gradient mass",
        "peak_to_mean": "the map's maximum over its mean",
        "display": scale_label(scale, decades),
        "maps": {
            name: {"title": title, "output_size": list(fs), "centre_index": list(centre_index(*fs)),
                   **s, "file": f"erf_{name}.png"}
            for name, title, fs, s in zip(result.names, result.titles, result.feature_sizes, result.summaries,
                                          strict=True)
        },
    }


def write_outputs(result: ERFResult, out_dir: Path, model_name: str = "", scale: str = "log",
                  decades: float = 3.0, source: str | None = None) -> list[Path]:
    """``erf.png`` (all maps), ``erf_<name>.png`` (each map) and ``erf.json`` under ``out_dir``;
    ``source``: where the weights came from (a checkpoint path), recorded in the JSON."""
    out_dir.mkdir(parents=True, exist_ok=True)
    title = f"Effective receptive fields of {model_name}, {result.size[0]}x{result.size[1]}, " \
            f"{result.images} image{'s' if result.images != 1 else ''}" if model_name else ""
    written = [save_figure(result, out_dir / "erf.png", scale, title, decades=decades)]
    written += [save_heatmap(m, out_dir / f"erf_{name}.png", scale, decades=decades)
                for name, m in zip(result.names, result.maps, strict=True)]
    path = out_dir / "erf.json"
    path.write_text(json.dumps(summary(result, model_name, scale, decades, source), indent=2))
    return [*written, path]
