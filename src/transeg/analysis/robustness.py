"""Robustness to common corruptions: the "-C" benchmark of SegFormer's Table 5 (Cityscapes-C).

Each evaluated image is corrupted by the 16 corruptions of Table 5 (blur, noise, digital, weather)
at severities 1..5 with ``imagecorruptions`` (``pip install 'transeg[analysis]'``) and the model's
mIoU is measured on every (corruption, severity) pair next to the clean mIoU; label maps are left
as they are. Corruptions are random but seeded: an image's corrupted version depends only on
(seed, corruption, severity, image index), so it is the same on every run and machine, and it can
be cached as lossless PNGs under ``cache/<corruption>/<severity>/<image stem>.png`` to be reused.
"""

from __future__ import annotations

import csv
import json
import math
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from transeg.analysis.corruptions import (
    CORRUPTION_GROUPS,
    CORRUPTIONS,
    FAMILY,
    SEVERITIES,
    CorruptionCache,
    check_severities,
    corrupt_image,
    load_corrupt,
)
from transeg.data.datasets import SegmentationDataset
from transeg.engine.distributed import DistInfo
from transeg.engine.evaluate import evaluate
from transeg.engine.recipe import EvalSection
from transeg.errors import TransegError
from transeg.models.segmentor import Segmentor

Pair = tuple[int, int]

# Sliding windows (crop, stride) of the reference test recipes, used by --mode slide when none is given.
SLIDE_WINDOWS: dict[str, tuple[Pair, Pair]] = {
    "cityscapes": ((1024, 1024), (768, 768)),
    "ade20k": ((512, 512), (512, 512)),
    "coco_stuff164k": ((512, 512), (512, 512)),
    "pascal_context": ((480, 480), (320, 320)),
    "pascal_context60": ((480, 480), (320, 320)),
}

# --------------------------------------------------------------------------- settings
def parse_corruptions(text: str | None) -> tuple[str, ...]:
    """Comma-separated corruption names (None or empty: all 16), kept in Table 5's order."""
    if not text:
        return CORRUPTIONS
    names = [n.strip() for n in text.split(",") if n.strip()]
    unknown = [n for n in names if n not in CORRUPTIONS]
    if unknown:
        raise TransegError(f"unknown corruption {unknown[0]!r} (valid: {', '.join(CORRUPTIONS)})")
    if not names:
        raise TransegError("--corruptions: no corruption named")
    return tuple(n for n in CORRUPTIONS if n in names)


def parse_severities(text: str | None) -> tuple[int, ...]:
    """Comma-separated severities in 1..5 (None or empty: all five), sorted and deduplicated."""
    if not text:
        return SEVERITIES
    try:
        values = [int(s) for s in text.split(",") if s.strip()]
    except ValueError:
        raise TransegError(f"--severities: expected comma-separated integers in 1..5, got {text!r}") from None
    return check_severities(values)


@dataclass(frozen=True)
class RobustnessSettings:
    """What to corrupt and how to predict. ``limit``: evaluate N images spread evenly over the split
    (None: all). ``crop``/``stride`` apply to ``mode='slide'``; ``test_scale`` (long, short) resizes
    each (corrupted) image keeping its ratio before inference, as ``transeg eval`` does."""

    corruptions: tuple[str, ...] = CORRUPTIONS
    severities: tuple[int, ...] = SEVERITIES
    limit: int | None = None
    seed: int = 0
    cache: Path | None = None
    mode: str = "whole"
    crop: Pair | None = None
    stride: Pair | None = None
    test_scale: Pair | None = None
    size_divisor: int | None = None
    batch_size: int = 4
    device: str = "cpu"

    def __post_init__(self) -> None:
        unknown = [n for n in self.corruptions if n not in CORRUPTIONS]
        if unknown or not self.corruptions:
            name = unknown[0] if unknown else "none"
            raise TransegError(f"unknown corruption {name!r} (valid: {', '.join(CORRUPTIONS)})")
        check_severities(self.severities)
        if self.limit is not None and self.limit < 1:
            raise TransegError(f"--limit must be at least 1, got {self.limit}")
        if self.seed < 0:
            raise TransegError(f"--seed must be non-negative, got {self.seed}")
        if self.mode not in ("whole", "slide"):
            raise TransegError(f"unknown mode {self.mode!r} (use 'whole' or 'slide')")
        if (self.crop is None) != (self.stride is None):
            raise TransegError("--crop and --stride must be given together")
        if self.mode == "whole" and self.crop is not None:
            raise TransegError("--crop/--stride apply to --mode slide")

    def eval_section(self, dataset_name: str) -> EvalSection:
        """The ``eval`` settings of this run; slide windows default to the dataset's test recipe."""
        crop, stride = self.crop, self.stride
        if self.mode == "slide" and crop is None:
            if dataset_name not in SLIDE_WINDOWS:
                raise TransegError(f"--mode slide on {dataset_name!r} needs --crop and --stride "
                                   f"(defaults exist for {', '.join(SLIDE_WINDOWS)})")
            crop, stride = SLIDE_WINDOWS[dataset_name]
        return EvalSection(mode=self.mode, crop=crop, stride=stride, batch_size=self.batch_size)


class CorruptedView:
    """The images ``indices`` of ``dataset`` with one corruption applied (None: clean), read the way
    :func:`transeg.engine.evaluate.evaluate` reads a dataset (``load``, ``classes``, ``ignore_index``)."""

    def __init__(self, dataset: SegmentationDataset, indices: Sequence[int], corruption: str | None,
                 severity: int, seed: int, cache: CorruptionCache | None = None,
                 on_load: Callable[[], None] | None = None) -> None:
        self.dataset, self.indices = dataset, list(indices)
        self.corruption, self.severity, self.seed = corruption, severity, seed
        self.cache, self.on_load = cache, on_load
        self.classes, self.ignore_index = dataset.classes, dataset.ignore_index
        self.generation_seconds = 0.0
        self.generated = 0

    def __len__(self) -> int:
        return len(self.indices)

    def load(self, i: int) -> dict[str, Any]:
        index = self.indices[i]
        sample = self.dataset.load(index)
        if self.corruption is not None:
            sample["image"] = self._corrupted(sample["image"], index, Path(sample["path"]).stem)
        if self.on_load is not None:
            self.on_load()
        return sample

    def _corrupted(self, image: np.ndarray, index: int, stem: str) -> np.ndarray:
        assert self.corruption is not None
        if self.cache is not None:
            cached = self.cache.get(self.corruption, self.severity, stem, image.shape)
            if cached is not None:
                return cached
        start = time.perf_counter()
        out = corrupt_image(image, self.corruption, self.severity, self.seed, index)
        self.generation_seconds += time.perf_counter() - start
        self.generated += 1
        if self.cache is not None:
            self.cache.put(self.corruption, self.severity, stem, out)
        return out


# --------------------------------------------------------------------------- the benchmark
@dataclass
class RobustnessResult:
    """mIoU in percent: ``clean`` and ``corruptions[name][severity]``; generation time per corruption."""

    clean: float
    corruptions: dict[str, dict[int, float]]
    num_images: int
    generation_seconds: dict[str, float] = field(default_factory=dict)
    generated: dict[str, int] = field(default_factory=dict)
    wall_seconds: float = 0.0

    def averages(self) -> dict[str, float]:
        """Each corruption's mIoU averaged over its severities (Table 5's cells)."""
        return {name: _mean(by_sev.values()) for name, by_sev in self.corruptions.items()}

    def mean_corrupted(self) -> float:
        return _mean(v for by_sev in self.corruptions.values() for v in by_sev.values())

    def to_dict(self, **meta: Any) -> dict[str, Any]:
        """``{"clean": mIoU, "corruptions": {name: {"1": mIoU, …}}}`` plus ``meta`` and summaries."""
        return {
            "clean": _json(self.clean),
            "corruptions": {name: {str(s): _json(v) for s, v in by_sev.items()}
                            for name, by_sev in self.corruptions.items()},
            **meta,
            "num_images": self.num_images,
            "mean_corrupted": _json(self.mean_corrupted()),
            "average_per_corruption": {name: _json(v) for name, v in self.averages().items()},
            "generation_seconds": {name: round(v, 3) for name, v in self.generation_seconds.items()},
            "generated_images": self.generated,
            "wall_seconds": round(self.wall_seconds, 1),
        }


def _mean(values: Iterable[float]) -> float:
    finite = [v for v in values if not math.isnan(v)]
    return sum(finite) / len(finite) if finite else math.nan


def _json(value: float) -> float | None:
    return None if math.isnan(value) else round(value, 4)


def select_indices(length: int, limit: int | None) -> list[int]:
    """All indices, or ``limit`` of them spread evenly over ``range(length)`` (first and last included)."""
    if length < 1:
        raise TransegError("the dataset has no images")
    if limit is None or limit >= length:
        return list(range(length))
    if limit == 1:
        return [0]
    return sorted({round(i * (length - 1) / (limit - 1)) for i in range(limit)})


def _check_stems(dataset: SegmentationDataset, indices: Sequence[int]) -> None:
    """Cache files are named by image stem: two evaluated images may not share one."""
    seen: dict[str, Path] = {}
    for i in indices:
        path = dataset.samples[i][0]
        if path.stem in seen:
            raise TransegError(f"{seen[path.stem]} and {path} share the name {path.stem!r}: --cache needs unique "
                               "image names (run without --cache)")
        seen[path.stem] = path


def run_robustness(model: Segmentor, dataset: SegmentationDataset, settings: RobustnessSettings,
                   dataset_name: str = "", console: Console | None = None,
                   show_progress: bool = True) -> RobustnessResult:
    """Clean mIoU, then the mIoU of every (corruption, severity) of ``settings`` on ``dataset``."""
    if dataset.num_classes != model.num_classes:
        raise TransegError(f"the model has {model.num_classes} classes, the dataset {dataset.name} "
                           f"{dataset.num_classes}")
    load_corrupt()
    eval_cfg = settings.eval_section(dataset_name)
    indices = select_indices(len(dataset), settings.limit)
    cache = None
    if settings.cache is not None:
        _check_stems(dataset, indices)
        cache = CorruptionCache(settings.cache, settings.seed)
    info = DistInfo(device=_device(settings.device))
    grid = [(None, 0)] + [(c, s) for c in settings.corruptions for s in settings.severities]
    start = time.perf_counter()
    scores: dict[str, dict[int, float]] = {c: {} for c in settings.corruptions}
    seconds = dict.fromkeys(settings.corruptions, 0.0)
    generated = dict.fromkeys(settings.corruptions, 0)
    clean = math.nan
    columns = (TextColumn("{task.description:<22}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    with Progress(*columns, console=console, disable=not show_progress) as progress:
        task = progress.add_task("robustness", total=len(grid) * len(indices))
        for corruption, severity in grid:
            progress.update(task, description="clean" if corruption is None else f"{corruption} {severity}")
            view = CorruptedView(dataset, indices, corruption, severity, settings.seed, cache,
                                 on_load=lambda: progress.advance(task))
            metrics, _ = evaluate(model, view, eval_cfg, settings.test_scale, settings.size_divisor,  # type: ignore[arg-type]
                                  info=info, show_progress=False)
            miou = metrics.mIoU * 100
            if corruption is None:
                clean = miou
            else:
                scores[corruption][severity] = miou
                seconds[corruption] += view.generation_seconds
                generated[corruption] += view.generated
    return RobustnessResult(clean, scores, len(indices), seconds, generated, time.perf_counter() - start)


def _device(name: str):
    import torch

    try:
        return torch.device(name)
    except (RuntimeError, TypeError) as exc:
        raise TransegError(f"cannot use device {name!r}: {exc}".splitlines()[0]) from None


# --------------------------------------------------------------------------- outputs
def write_json(result: RobustnessResult, path: Path, **meta: Any) -> Path:
    path.write_text(json.dumps(result.to_dict(**meta), indent=2) + "\n")
    return path


def _cell(value: float) -> str:
    return "" if math.isnan(value) else f"{value:.2f}"


def write_table_csv(result: RobustnessResult, path: Path, model_name: str) -> Path:
    """Table 5's layout: one row per model, Clean, then each corruption averaged over severities."""
    averages = result.averages()
    names = [n for n in CORRUPTIONS if n in averages]
    with path.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["model", "clean", *names])
        writer.writerow([model_name, _cell(result.clean), *(_cell(averages[n]) for n in names)])
    return path


def write_severity_csv(result: RobustnessResult, path: Path) -> Path:
    """A long table: family, corruption, severity, mIoU (clean as severity 0)."""
    with path.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["family", "corruption", "severity", "mIoU"])
        writer.writerow(["clean", "clean", 0, _cell(result.clean)])
        for name in (n for n in CORRUPTIONS if n in result.corruptions):
            for severity, value in sorted(result.corruptions[name].items()):
                writer.writerow([FAMILY[name], name, severity, _cell(value)])
    return path


_FAMILY_COLOURS = {"blur": "Blues", "noise": "Reds", "digital": "Greens", "weather": "Purples"}


def save_plot(result: RobustnessResult, path: Path, title: str = "") -> Path:
    """mIoU against severity, a line per corruption (a colour map per family), clean dashed."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 4.8), dpi=100)
    for family, names in CORRUPTION_GROUPS.items():
        present = [n for n in names if n in result.corruptions]
        cmap = plt.get_cmap(_FAMILY_COLOURS[family])
        for k, name in enumerate(present):
            by_sev = sorted(result.corruptions[name].items())
            colour = cmap(0.45 + 0.5 * k / max(len(names) - 1, 1))
            ax.plot([s for s, _ in by_sev], [v for _, v in by_sev], marker="os^D"[k % 4], markersize=4, linewidth=1.5,
                    color=colour, label=f"{family}: {name.replace('_', ' ')}")
    if not math.isnan(result.clean):
        ax.axhline(result.clean, color="black", linestyle="--", linewidth=1.2, label=f"clean ({result.clean:.1f})")
    severities = sorted({s for by_sev in result.corruptions.values() for s in by_sev})
    ax.set_xticks(severities)
    ax.set_xlabel("severity")
    ax.set_ylabel("mIoU (%)")
    ax.set_ylim(bottom=0)
    ax.grid(alpha=0.3)
    ax.set_title(title or "mIoU under common corruptions")
    ax.legend(loc="center left", bbox_to_anchor=(1.01, 0.5), fontsize=7.5, frameon=False)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


def write_outputs(result: RobustnessResult, out_dir: Path, model_name: str, title: str = "",
                  **meta: Any) -> list[Path]:
    """``robustness.json``, ``robustness.csv``, ``robustness_by_severity.csv`` and ``robustness.png``."""
    out_dir.mkdir(parents=True, exist_ok=True)
    return [
        write_json(result, out_dir / "robustness.json", model=model_name, **meta),
        write_table_csv(result, out_dir / "robustness.csv", model_name),
        write_severity_csv(result, out_dir / "robustness_by_severity.csv"),
        save_plot(result, out_dir / "robustness.png", title),
    ]


def format_table(result: RobustnessResult) -> str:
    """A plain-text summary: clean, each corruption's average over severities, the mean."""
    averages = result.averages()
    lines = [f"{'clean':<26}{_cell(result.clean):>7}"]
    for family, names in CORRUPTION_GROUPS.items():
        lines += [f"{family:<9}{name:<17}{_cell(averages[name]):>7}" for name in names if name in averages]
    lines.append(f"{'mean over corruptions':<26}{_cell(result.mean_corrupted()):>7}")
    return "\n".join(lines)
