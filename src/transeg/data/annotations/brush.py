"""Label Studio's brush RLE (the ``rle`` list of bytes of a ``brushlabels`` result).

The bytes are a bit stream (most significant bit first): 32 bits for the number of values, 5 bits
for the word size minus 1, four 4-bit run-length field sizes minus 1, then chunks of one
repeat-flag bit, 2 bits choosing a field size, ``count - 1`` in that many bits, and either one word
repeated ``count`` times or ``count`` literal words. The values are the (H, W, 4) RGBA bytes of the
mask image, row-major; the mask is the alpha channel.
"""

from __future__ import annotations

import numpy as np

RUN_SIZES = (3, 4, 8, 16)  # the field sizes Label Studio's own encoder uses
WORD = 8


class _Bits:
    """A reader over the bits of a byte string, most significant bit first."""

    def __init__(self, data: bytes) -> None:
        self.bits = (np.unpackbits(np.frombuffer(data, dtype=np.uint8)) + 48).tobytes().decode()
        self.position = 0

    def read(self, size: int) -> int:
        if self.position + size > len(self.bits):
            raise ValueError(f"the brush RLE ends after {len(self.bits)} bits, inside a field")
        chunk = self.bits[self.position:self.position + size]
        self.position += size
        return int(chunk, 2) if size else 0


def decode_values(data: bytes | list[int]) -> np.ndarray:
    """Brush RLE bytes → the flat uint8 values they hold; ValueError when the stream is malformed."""
    bits = _Bits(bytes(data))
    total = bits.read(32)
    word = bits.read(5) + 1
    sizes = [bits.read(4) + 1 for _ in range(4)]
    out = np.zeros(total, dtype=np.uint8)
    i = 0
    while i < total:
        repeat = bits.read(1)
        end = min(i + 1 + bits.read(sizes[bits.read(2)]), total)
        if repeat:
            out[i:end] = bits.read(word)
        else:
            for j in range(i, end):
                out[j] = bits.read(word)
        i = end
    return out


def decode_mask(data: bytes | list[int], height: int, width: int) -> np.ndarray:
    """Brush RLE → (H, W) bool mask (alpha > 0); ValueError when it holds other than H·W·4 values."""
    values = decode_values(data)
    if values.size != height * width * 4:
        raise ValueError(f"the brush RLE holds {values.size} values, not {height}x{width}x4={height * width * 4}")
    return values.reshape(height, width, 4)[:, :, 3] > 0


def _bits(value: int, size: int) -> str:
    return format(value, f"0{size}b")


def encode_mask(mask: np.ndarray) -> list[int]:
    """(H, W) bool mask → brush RLE bytes (as ints, as in the JSON) of its RGBA image, 255 on the mask."""
    values = np.repeat(np.where(np.asarray(mask, dtype=bool).ravel(), 255, 0).astype(np.uint8), 4)
    parts = [_bits(values.size, 32), _bits(WORD - 1, 5), *(_bits(s - 1, 4) for s in RUN_SIZES)]
    longest = 1 << RUN_SIZES[-1]
    changes = np.flatnonzero(values[1:] != values[:-1]) + 1
    for start, stop in zip(np.r_[0, changes], np.r_[changes, values.size], strict=True):
        value = _bits(int(values[start]), WORD)
        for chunk in range(int(start), int(stop), longest):
            count = min(longest, int(stop) - chunk)
            field = next(k for k, s in enumerate(RUN_SIZES) if count <= 1 << s)
            parts.append("1" + _bits(field, 2) + _bits(count - 1, RUN_SIZES[field]) + value)
    stream = "".join(parts)
    stream += "0" * (-len(stream) % 8)
    return np.packbits(np.frombuffer(stream.encode(), dtype=np.uint8) - 48).tolist()
