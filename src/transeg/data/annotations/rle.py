"""COCO run-length encoding: (H, W) masks ↔ counts ↔ the compressed string of COCO's JSON files.

Runs go down the columns (Fortran order) and alternate 0, 1, 0, … starting with a (possibly empty)
run of 0s. The string stores each count, minus the count two places before it from the fourth on,
as little-endian 5-bit groups with a continuation bit (0x20) and a sign bit (0x10) on the last
group, each group offset by 48 to a printable character.
"""

from __future__ import annotations

import numpy as np


def mask_to_counts(mask: np.ndarray, order: str = "F") -> list[int]:
    """(H, W) bool mask → run lengths over its pixels in ``order`` ('F': COCO, 'C': row-major)."""
    flat = np.asarray(mask, dtype=bool).ravel(order=order)
    changes = np.flatnonzero(flat[1:] != flat[:-1]) + 1
    bounds = np.concatenate(([0], changes, [flat.size]))
    runs = np.diff(bounds).tolist()
    return [0, *runs] if flat.size and flat[0] else runs


def counts_to_mask(counts: list[int], height: int, width: int, order: str = "F") -> np.ndarray:
    """Run lengths (0s first) → (H, W) bool mask; ValueError when they do not sum to H·W."""
    counts_arr = np.asarray(counts, dtype=np.int64)
    if (counts_arr < 0).any() or int(counts_arr.sum()) != height * width:
        raise ValueError(f"the runs cover {int(counts_arr.sum())} pixels, not {height}x{width}={height * width}")
    values = np.arange(len(counts_arr)) % 2 == 1
    flat = np.repeat(values, counts_arr)
    return flat.reshape((height, width), order=order)


def encode_counts(counts: list[int]) -> str:
    """Run lengths → COCO's compressed RLE string."""
    chars = []
    for i, count in enumerate(counts):
        x = count - counts[i - 2] if i > 2 else count
        more = True
        while more:
            c = x & 0x1F
            x >>= 5
            more = x != -1 if c & 0x10 else x != 0
            if more:
                c |= 0x20
            chars.append(chr(c + 48))
    return "".join(chars)


def decode_counts(text: str) -> list[int]:
    """COCO's compressed RLE string → run lengths; ValueError on a character outside the code."""
    counts: list[int] = []
    position = 0
    while position < len(text):
        x = shift = 0
        more = True
        while more:
            if position >= len(text):
                raise ValueError("the RLE string ends inside a count")
            c = ord(text[position]) - 48
            if not 0 <= c < 64:
                raise ValueError(f"character {text[position]!r} at {position} is not in the RLE code")
            x |= (c & 0x1F) << shift
            more = bool(c & 0x20)
            position += 1
            shift += 5
            if not more and c & 0x10:
                x |= -1 << shift
        if len(counts) > 2:
            x += counts[-2]
        counts.append(x)
    return counts


def encode_mask(mask: np.ndarray) -> dict:
    """(H, W) bool mask → COCO compressed RLE ``{"size": [H, W], "counts": str}``."""
    return {"size": list(mask.shape), "counts": encode_counts(mask_to_counts(mask))}
