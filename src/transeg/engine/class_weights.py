"""``class_weight: auto``: the training split's class frequencies, counted once per run and cached in
the run directory (``class_weights.json``), turned into weights by :mod:`transeg.data.class_weights`."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

from transeg.data.class_weights import class_pixel_counts, inverse_log_weights
from transeg.data.datasets import SegmentationDataset
from transeg.engine.loss_spec import LossTerm, uses_auto_class_weight
from transeg.weights.files import write_atomic

CACHE_NAME = "class_weights.json"


def resolve_class_weight(terms: Sequence[LossTerm], dataset: SegmentationDataset, run_dir: Path,
                         write: bool = True) -> list[float] | None:
    """The (K,) weights for ``class_weight: auto`` (None when no term asks for them): read from
    ``run_dir/class_weights.json`` when it was made for the same classes, else counted over ``dataset``
    and, with ``write``, cached there atomically."""
    if not uses_auto_class_weight(terms):
        return None
    cache = Path(run_dir) / CACHE_NAME
    if cache.is_file():
        try:
            saved = json.loads(cache.read_text())
        except (OSError, json.JSONDecodeError):
            saved = {}
        if saved.get("classes") == list(dataset.classes) and saved.get("split_size") == len(dataset):
            return inverse_log_weights(saved["class_pixels"])
    pixels = class_pixel_counts(dataset, show_progress=write)
    if write:
        cache.parent.mkdir(parents=True, exist_ok=True)
        record = {"classes": list(dataset.classes), "split_size": len(dataset), "class_pixels": pixels,
                  "formula": "1 / ln(1.02 + share)", "class_weight": inverse_log_weights(pixels)}
        write_atomic(cache, lambda tmp: Path(tmp).write_text(json.dumps(record, indent=2)))
    return inverse_log_weights(pixels)
