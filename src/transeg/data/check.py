"""Dataset sanity check: scan every pair, count label values, and explain the usual label mistakes.

``check_dataset`` reads each image and label map (no transform), records unreadable files, size
mismatches, the raw label values (before the dataset's label table) and, after it, values that
are neither a class nor the ignore value. ``diagnose`` turns a report into one-line hints
(binary masks stored 0/255, 1-based labels, reduce_zero_label on 0-based labels, …).
"""

from __future__ import annotations

import dataclasses
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from transeg.data.class_weights import inverse_log_weights
from transeg.data.datasets import SegmentationDataset, check_same_size, invalid_label_values
from transeg.data.images import read_image, read_label
from transeg.errors import TransegError


@dataclass
class CheckReport:
    """What :func:`check_dataset` found. Pixel counts are over the checked samples."""

    name: str
    classes: list[str]
    ignore_index: int
    reduce_zero_label: bool
    num_samples: int
    checked: int = 0
    missing_labels: list[str] = field(default_factory=list)  # image paths without a label map
    unreadable: list[str] = field(default_factory=list)  # one error message per file
    size_mismatches: list[str] = field(default_factory=list)  # one error message per pair
    raw_values: dict[int, int] = field(default_factory=dict)  # raw label value → pixels, before the table
    ignored_raw_values: list[int] = field(default_factory=list)  # raw values the table sends to ignore
    out_of_range: dict[str, list[int]] = field(default_factory=dict)  # label path → invalid mapped values
    class_pixels: list[int] = field(default_factory=list)  # (num_classes,) pixels per class after mapping
    ignore_pixels: int = 0

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def ok(self) -> bool:
        """True when every pair is readable, aligned, in range, and some pixel is labelled."""
        problems = self.missing_labels or self.unreadable or self.size_mismatches or self.out_of_range
        return not problems and sum(self.class_pixels) > 0

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able dict (raw value keys are ints), with the weights ``class_weight: auto`` would
        give from these class counts."""
        return {**dataclasses.asdict(self), "num_classes": self.num_classes, "ok": self.ok,
                "class_weight_auto": inverse_log_weights(self.class_pixels)}


def _reduces_zero(lut: np.ndarray, ignore_index: int) -> bool:
    return int(lut[0]) == ignore_index and int(lut[1]) == 0


def check_dataset(dataset: SegmentationDataset, limit: int | None = None) -> CheckReport:
    """Scan the first ``limit`` (default: all) pairs of ``dataset``; never raises on bad files."""
    report = CheckReport(
        name=dataset.name,
        classes=list(dataset.classes),
        ignore_index=dataset.ignore_index,
        reduce_zero_label=_reduces_zero(dataset.label_lut, dataset.ignore_index),
        num_samples=len(dataset),
        class_pixels=[0] * dataset.num_classes,
    )
    raw_counts: Counter[int] = Counter()
    for image_path, label_path in dataset.samples[:limit]:
        report.checked += 1
        if label_path is None or not label_path.is_file():
            report.missing_labels.append(str(image_path))
            continue
        try:
            raw = _read_pair(report, image_path, label_path)
        except TransegError as exc:
            report.unreadable.append(str(exc))
            continue
        _count(report, dataset, raw, label_path, raw_counts)
    report.raw_values = dict(sorted(raw_counts.items()))
    report.ignored_raw_values = [
        v for v in report.raw_values if v > 255 or int(dataset.label_lut[v]) == dataset.ignore_index
    ]
    return report


def _read_pair(report: CheckReport, image_path: Path, label_path: Path) -> np.ndarray:
    """(H, W) raw label map; a size mismatch is recorded, not raised."""
    image, raw = read_image(image_path), read_label(label_path)
    try:
        check_same_size(image_path, image.shape[:2], label_path, raw.shape)
    except TransegError as exc:
        report.size_mismatches.append(str(exc))
    return raw


def _count(
    report: CheckReport, dataset: SegmentationDataset, raw: np.ndarray, label_path: Path, raw_counts: Counter
) -> None:
    """Add one label map's raw and mapped value counts to the report."""
    raw_hist = np.bincount(raw.ravel())
    raw_counts.update({int(v): int(raw_hist[v]) for v in np.flatnonzero(raw_hist)})
    mapped = dataset.map_label(raw)
    mapped_hist = np.bincount(mapped.ravel(), minlength=256)
    for c in range(dataset.num_classes):
        report.class_pixels[c] += int(mapped_hist[c])
    report.ignore_pixels += int(mapped_hist[dataset.ignore_index])
    bad = invalid_label_values(raw, mapped, dataset.num_classes, dataset.ignore_index)
    if bad:
        report.out_of_range[str(label_path)] = bad


# --------------------------------------------------------------------------- hints
def diagnose(report: CheckReport) -> list[str]:
    """One-line hints for the problems in ``report``, most specific first; empty when all is well."""
    rules = (_file_hints, _binary_255_hint, _off_by_one_hint, _zero_is_class_hint, _noisy_values_hint,
             _out_of_range_hint, _only_ignore_hint, _unseen_classes_hint)
    return [hint for rule in rules for hint in rule(report)]


def _first(items: list[str]) -> str:
    return f"{len(items)} (e.g. {items[0]})"


def _file_hints(r: CheckReport) -> list[str]:
    hints = []
    if r.missing_labels:
        hints.append(f"images without a label map: {_first(r.missing_labels)}")
    if r.unreadable:
        hints.append(f"unreadable files: {_first(r.unreadable)}")
    if any("colour" in message for message in r.unreadable):
        hints.append("some label maps are colour images: save each pixel's class index instead "
                     "(a greyscale or palette PNG), mapping every colour of your palette to its index")
    if r.size_mismatches:
        hints.append(f"image/label size mismatches: {_first(r.size_mismatches)}; label maps must have "
                     "their image's size (resize them with nearest neighbour, never crop one side only)")
    return hints


def _binary_255_hint(r: CheckReport) -> list[str]:
    values = set(r.raw_values)
    if 255 not in values or not values <= {0, 255} or 255 not in r.ignored_raw_values:
        return []
    return ["the labels hold only 0 and 255 and 255 is the ignore value, so every 255 pixel is ignored "
            "(that class gets no training signal and NaN/0 IoU): for binary masks add "
            "`label_map: {255: 1}` to the classes YAML; keep it only if 255 really marks unlabelled pixels"]


def _out_of_range_values(r: CheckReport) -> set[int]:
    return {v for values in r.out_of_range.values() for v in values}


def _off_by_one_hint(r: CheckReport) -> list[str]:
    if r.reduce_zero_label or max(_out_of_range_values(r), default=-1) != r.num_classes:
        return []
    n = r.num_classes
    return [f"label values reach {n} but the {n} classes are 0..{n - 1}: the labels are probably 1-based "
            f"with 0 = unlabelled; turn on reduce_zero_label (or, if 0 is a class too, list {n + 1} classes)"]


def _zero_is_class_hint(r: CheckReport) -> list[str]:
    total = sum(r.raw_values.values())
    if not r.reduce_zero_label or 0 not in r.raw_values or total == 0:
        return []
    share = r.raw_values[0] / total
    top_unseen = r.class_pixels[-1] == 0
    if share < 0.5 and not top_unseen:
        return []
    why = f"raw 0 is {share:.0%} of the pixels" + (
        f" and the last class {r.classes[-1]!r} never appears" if top_unseen else "")
    return [f"reduce_zero_label is on: raw 0 is ignored and every other value shifts down by one, but {why}; "
            f"if 0 is a real class (0-based labels), turn reduce_zero_label off"]


def _noisy_values_hint(r: CheckReport) -> list[str]:
    distinct = len(r.raw_values)
    if len(_out_of_range_values(r)) <= 5 or distinct <= r.num_classes + 5:
        return []
    return [f"the label maps hold {distinct} distinct values for {r.num_classes} classes: they look "
            f"interpolated or lossy (JPEG); labels must be index maps saved as PNG and resized with "
            f"nearest neighbour"]


def _out_of_range_hint(r: CheckReport) -> list[str]:
    if not r.out_of_range:
        return []
    values = sorted(_out_of_range_values(r))
    shown = ", ".join(map(str, values[:10])) + (", …" if len(values) > 10 else "")
    path = next(iter(r.out_of_range))
    return [f"{len(r.out_of_range)} label maps hold values that are neither a class "
            f"(0..{r.num_classes - 1}) nor ignore ({r.ignore_index}): {shown} (e.g. {path}); "
            f"fix the classes list or the label mapping"]


def _only_ignore_hint(r: CheckReport) -> list[str]:
    if sum(r.class_pixels) > 0 or r.ignore_pixels == 0:
        return []
    return [f"every labelled pixel maps to ignore ({r.ignore_index}); raw values found: "
            f"{sorted(r.raw_values)}: check reduce_zero_label / ignore_index / label_map"]


def _unseen_classes_hint(r: CheckReport) -> list[str]:
    unseen = [name for name, count in zip(r.classes, r.class_pixels, strict=True) if count == 0]
    if not unseen or sum(r.class_pixels) == 0:
        return []
    shown = ", ".join(unseen[:8]) + (", …" if len(unseen) > 8 else "")
    return [f"{len(unseen)} of {r.num_classes} classes have no pixels in the {r.checked} checked samples "
            f"({shown}): their IoU will be NaN"]


def format_report(report: CheckReport) -> str:
    """The report as a few human-readable lines: pairing, sizes, label values, class histogram."""
    lines = [f"{report.name}: {report.checked} of {report.num_samples} pairs checked, "
             f"{report.num_classes} classes{' (reduce_zero_label)' if report.reduce_zero_label else ''}"]
    for title, items in (("missing label maps", report.missing_labels), ("unreadable", report.unreadable),
                         ("size mismatches", report.size_mismatches)):
        if items:
            lines.append(f"  {title}: {len(items)}, e.g. {items[0]}")
    lines.append(f"  raw label values: {sorted(report.raw_values)}")
    if report.out_of_range:
        first = next(iter(report.out_of_range.items()))
        lines.append(f"  files with values outside [0, {report.num_classes - 1}] and not ignore: "
                     f"{len(report.out_of_range)}, e.g. {first[0]}: {first[1]}")
    total = sum(report.class_pixels) + report.ignore_pixels
    lines.append("  class histogram (share of pixels; class_weight auto = 1 / ln(1.02 + share of labelled)):")
    weights = inverse_log_weights(report.class_pixels)
    for name, pixels, weight in zip(report.classes, report.class_pixels, weights, strict=True):
        lines.append(f"    {name:<24} {pixels / max(total, 1) * 100:6.2f}%  weight {weight:6.2f}"
                     + ("  (no pixel)" if pixels == 0 else ""))
    lines.append(f"    {'(ignored)':<24} {report.ignore_pixels / max(total, 1) * 100:6.2f}%")
    lines.append("  ok" if report.ok else "  problems found")
    return "\n".join(lines)
