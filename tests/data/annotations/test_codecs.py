"""The COCO RLE codec against pycocotools (the reference implementation), and Label Studio's brush RLE
against a stream assembled by hand from its documented bit layout."""

from __future__ import annotations

import numpy as np
import pycocotools.mask as coco_mask
import pytest

from transeg.data.annotations import brush, rle

# pycocotools 2.0 calls np.array(copy=False) under NumPy 2
pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")

def random_masks(count: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    for i in range(count):
        h, w = (int(v) for v in rng.integers(1, 40, 2))
        if i % 3 == 0:  # blobs: long runs, large counts whose deltas go negative
            mask = np.zeros((h, w), bool)
            mask[rng.integers(0, h):, rng.integers(0, w):] = True
        else:
            mask = rng.random((h, w)) < rng.random()
        yield mask


def test_encode_matches_pycocotools_string():
    for mask in random_masks(400):
        reference = coco_mask.encode(np.asfortranarray(mask.astype(np.uint8)))
        ours = rle.encode_mask(mask)
        assert ours["counts"] == reference["counts"].decode()
        assert ours["size"] == list(reference["size"])


def test_decode_reads_pycocotools_strings_and_large_images():
    for mask in random_masks(400, seed=1):
        text = coco_mask.encode(np.asfortranarray(mask.astype(np.uint8)))["counts"].decode()
        assert np.array_equal(rle.counts_to_mask(rle.decode_counts(text), *mask.shape), mask)
    big = np.zeros((1500, 1700), bool)
    big[100:1400, 3:1600] = True
    text = coco_mask.encode(np.asfortranarray(big.astype(np.uint8)))["counts"].decode()
    assert np.array_equal(rle.counts_to_mask(rle.decode_counts(text), *big.shape), big)


def test_uncompressed_counts_match_pycocotools():
    for mask in random_masks(100, seed=2):
        counts = rle.mask_to_counts(mask)
        h, w = mask.shape
        reference = coco_mask.decode(coco_mask.frPyObjects({"size": [h, w], "counts": counts}, h, w))
        assert np.array_equal(reference.astype(bool), mask)


@pytest.mark.parametrize("bad", ["\x1f", "a" * 3 + "~"])
def test_decode_refuses_characters_outside_the_code(bad):
    with pytest.raises(ValueError):
        rle.decode_counts(bad)


def test_counts_that_do_not_cover_the_image_are_refused():
    with pytest.raises(ValueError, match="cover 5 pixels"):
        rle.counts_to_mask([2, 3], 2, 3)


def test_brush_decodes_a_hand_assembled_stream():
    # 2x2 mask, RGBA: 16 values. Header: 16 (32 bits), word 8 → 7 (5 bits), sizes 3,4,8,16 → 2,3,7,15.
    # Chunks: 8 repeats of 0 (flag 1, size #0 (3 bits), count-1=7, word 0), then 3 literals
    # 255,255,255 (flag 0, size #0, count-1=2) and 5 repeats of 255 (flag 1, size #0, 4).
    bits = f"{16:032b}{7:05b}" + "".join(f"{s - 1:04b}" for s in (3, 4, 8, 16))
    bits += "1" + "00" + "111" + f"{0:08b}"
    bits += "0" + "00" + "010" + f"{255:08b}" * 3
    bits += "1" + "00" + "100" + f"{255:08b}"
    bits += "0" * (-len(bits) % 8)
    data = int(bits, 2).to_bytes(len(bits) // 8, "big")
    assert brush.decode_values(data).tolist() == [0] * 8 + [255] * 8
    assert brush.decode_mask(data, 2, 2).tolist() == [[False, False], [True, True]]


def test_brush_round_trip_and_long_runs():
    for mask in random_masks(100, seed=3):
        assert np.array_equal(brush.decode_mask(brush.encode_mask(mask), *mask.shape), mask)
    full = np.ones((300, 300), bool)  # 360000 values: runs longer than the 16-bit field
    assert np.array_equal(brush.decode_mask(brush.encode_mask(full), 300, 300), full)


def test_brush_size_disagreement_and_truncation_are_errors():
    data = brush.encode_mask(np.ones((4, 5), bool))
    with pytest.raises(ValueError, match="not 5x5x4"):
        brush.decode_mask(data, 5, 5)
    with pytest.raises(ValueError, match="ends"):
        brush.decode_values(bytes(data[:6]))
