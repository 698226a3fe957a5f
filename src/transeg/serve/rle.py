"""COCO run-length encoding of binary masks, in the compressed string form pycocotools writes."""

from __future__ import annotations

import numpy as np


def mask_runs(mask: np.ndarray) -> list[int]:
    """(H, W) bool -> run lengths over the column-major (Fortran order) pixels, starting with a
    (possibly empty) run of zeros, as COCO's uncompressed RLE ``counts``."""
    flat = np.asarray(mask, dtype=bool).reshape(-1, order="F")
    if flat.size == 0:
        return []
    changes = np.flatnonzero(flat[1:] != flat[:-1]) + 1
    bounds = np.concatenate(([0], changes, [flat.size]))
    runs = np.diff(bounds).tolist()
    return [0, *runs] if flat[0] else runs


def compress_counts(runs: list[int]) -> str:
    """COCO's compressed ``counts`` string: each run (from the third on, minus the run two before
    it) as a signed little-endian base-32 number, five bits per character, offset by 48, the 0x20
    bit marking that more characters follow."""
    chars = []
    for i, run in enumerate(runs):
        value = run - runs[i - 2] if i > 2 else run
        more = True
        while more:
            digit = value & 0x1F
            value >>= 5  # arithmetic shift: a negative value tends to -1
            more = value != -1 if digit & 0x10 else value != 0
            chars.append(chr(digit + (0x20 if more else 0) + 48))
    return "".join(chars)


def encode_mask(mask: np.ndarray) -> dict[str, object]:
    """(H, W) bool -> ``{"size": [H, W], "counts": str}``, what ``pycocotools.mask.encode`` returns
    (with ``counts`` decoded to text)."""
    h, w = np.asarray(mask).shape
    return {"size": [int(h), int(w)], "counts": compress_counts(mask_runs(mask))}
