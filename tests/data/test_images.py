"""Image / label-map reading and writing, palettes and overlays."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image, ImageFile

from transeg.data.images import read_image, read_label, save_label_png
from transeg.data.labels import default_palette
from transeg.errors import TransegError
from transeg.viz import overlay


def _noise(h: int, w: int, channels: int = 3, seed: int = 0) -> np.ndarray:
    shape = (h, w, channels) if channels > 1 else (h, w)
    return np.random.default_rng(seed).integers(0, 256, shape, dtype=np.uint8)


def _encoded(array: np.ndarray, fmt: str) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(array).save(buf, format=fmt)
    return buf.getvalue()


# --- label maps -------------------------------------------------------------------------------

def test_label_png_round_trip_keeps_indices(tmp_path):
    labels = np.random.default_rng(1).integers(0, 21, (23, 31))
    labels[0, :5] = 255  # ignore value survives
    path = tmp_path / "sub" / "dir" / "label.png"  # parent dirs are created
    save_label_png(labels, path, default_palette(21))
    with Image.open(path) as img:
        assert img.mode == "P"
        palette = np.array(img.getpalette()[:63]).reshape(21, 3)
    np.testing.assert_array_equal(palette, default_palette(21))
    back = read_label(path)
    assert back.dtype == np.uint8 and back.shape == (23, 31)
    np.testing.assert_array_equal(back, labels)


def test_label_png_more_than_256_classes_is_16_bit(tmp_path):
    labels = np.random.default_rng(2).integers(0, 1000, (9, 13))
    labels[0, 0] = 999
    path = tmp_path / "many.png"
    save_label_png(labels, path, default_palette(1000))
    with Image.open(path) as img:
        assert img.mode.startswith("I")
    back = read_label(path)
    assert back.dtype == np.int64
    np.testing.assert_array_equal(back, labels)


def test_read_label_palette_gives_indices_not_colours(tmp_path):
    index = np.arange(12, dtype=np.uint8).reshape(3, 4)
    img = Image.fromarray(index)
    img.putpalette(default_palette(12).reshape(-1).tolist())
    assert img.mode == "P"
    img.save(tmp_path / "p.png")
    np.testing.assert_array_equal(read_label(tmp_path / "p.png"), index)


def test_read_label_greyscale_and_small_16_bit(tmp_path):
    grey = _noise(7, 9, channels=1)
    Image.fromarray(grey).save(tmp_path / "l.png")
    np.testing.assert_array_equal(read_label(tmp_path / "l.png"), grey)
    Image.fromarray(grey.astype(np.uint16)).save(tmp_path / "i16.png")
    back = read_label(tmp_path / "i16.png")
    assert back.dtype == np.uint8
    np.testing.assert_array_equal(back, grey)


@pytest.mark.parametrize("channels", [3, 4])
def test_read_label_refuses_colour_maps(tmp_path, channels):
    path = tmp_path / "colour_label.png"
    Image.fromarray(_noise(5, 6, channels)).save(path)
    with pytest.raises(TransegError, match=r"colour_label\.png.*class indices, not colours"):
        read_label(path)


def test_save_label_png_rejects_negative(tmp_path):
    with pytest.raises(TransegError, match=r"bad\.png"):
        save_label_png(np.full((2, 2), -1), tmp_path / "bad.png", default_palette(3))


# --- images -----------------------------------------------------------------------------------

def test_read_image_rgb_exact(tmp_path):
    rgb = _noise(10, 14)
    Image.fromarray(rgb).save(tmp_path / "rgb.png")
    out = read_image(tmp_path / "rgb.png")
    assert out.dtype == np.uint8 and out.shape == (10, 14, 3)
    np.testing.assert_array_equal(out, rgb)


def test_read_image_rgba_drops_alpha(tmp_path):
    rgba = _noise(6, 8, 4)
    rgba[..., 3] = 0  # fully transparent: the colours must still come back, not a composite
    Image.fromarray(rgba).save(tmp_path / "rgba.png")
    np.testing.assert_array_equal(read_image(tmp_path / "rgba.png"), rgba[..., :3])


def test_read_image_greyscale_to_rgb(tmp_path):
    grey = _noise(6, 8, channels=1)
    Image.fromarray(grey).save(tmp_path / "grey.png")
    out = read_image(tmp_path / "grey.png")
    assert out.shape == (6, 8, 3)
    for c in range(3):
        np.testing.assert_array_equal(out[..., c], grey)


def test_read_image_palette_to_colours(tmp_path):
    index = np.arange(20, dtype=np.uint8).reshape(4, 5)
    img = Image.fromarray(index)
    img.putpalette(default_palette(20).reshape(-1).tolist())
    img.save(tmp_path / "pal.png")
    np.testing.assert_array_equal(read_image(tmp_path / "pal.png"), default_palette(20)[index])


def test_read_image_16_bit_scaled_to_8_bit(tmp_path):
    wide = np.array([[0, 65535, 257 * 100], [257 * 7, 300, 65000]], dtype=np.uint16)
    Image.fromarray(wide).save(tmp_path / "deep.png")
    out = read_image(tmp_path / "deep.png")
    expected = np.array([[0, 255, 100], [7, 1, 253]], dtype=np.uint8)
    assert out.shape == (2, 3, 3)
    np.testing.assert_array_equal(out[..., 0], expected)


def test_read_image_cmyk_to_rgb(tmp_path):
    Image.new("CMYK", (4, 3), (0, 255, 255, 0)).save(tmp_path / "cmyk.jpg", quality=100)
    out = read_image(tmp_path / "cmyk.jpg")
    assert out.shape == (3, 4, 3)
    assert out[..., 0].min() > 200 and out[..., 1:].max() < 60  # pure red


def test_read_image_applies_exif_orientation(tmp_path):
    stored = _noise(4, 7)  # 4 rows x 7 columns as stored
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 CW to display"
    Image.fromarray(stored).save(tmp_path / "rotated.png", exif=exif)
    out = read_image(tmp_path / "rotated.png")
    assert out.shape == (7, 4, 3)
    np.testing.assert_array_equal(out, np.rot90(stored, k=-1))
    assert out[0, -1].tolist() == stored[0, 0].tolist()  # stored top-left ends top-right


# --- unreadable files -------------------------------------------------------------------------

def test_missing_file(tmp_path):
    with pytest.raises(TransegError, match=r"nowhere\.png"):
        read_image(tmp_path / "nowhere.png")
    with pytest.raises(TransegError, match=r"nowhere\.png"):
        read_label(tmp_path / "nowhere.png")


def test_empty_file(tmp_path):
    (tmp_path / "empty.jpg").write_bytes(b"")
    with pytest.raises(TransegError, match=r"empty\.jpg"):
        read_image(tmp_path / "empty.jpg")


@pytest.mark.parametrize("fmt,suffix", [("PNG", "png"), ("JPEG", "jpg")])
@pytest.mark.parametrize("lenient", [False, True])
def test_truncated_file(tmp_path, monkeypatch, fmt, suffix, lenient):
    # Even if some other library switched Pillow to lenient loading, truncation is an error.
    monkeypatch.setattr(ImageFile, "LOAD_TRUNCATED_IMAGES", lenient)
    data = _encoded(_noise(64, 64), fmt)
    path = tmp_path / f"half.{suffix}"
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(TransegError, match=rf"half\.{suffix}") as info:
        read_image(path)
    assert "\n" not in str(info.value)
    assert ImageFile.LOAD_TRUNCATED_IMAGES is lenient  # restored afterwards
    with pytest.raises(TransegError, match=rf"half\.{suffix}"):
        read_label(path)


def test_garbage_file(tmp_path):
    path = tmp_path / "garbage.png"
    path.write_bytes(b"this is not an image at all" * 10)
    with pytest.raises(TransegError, match=r"garbage\.png"):
        read_image(path)
    with pytest.raises(TransegError, match=r"garbage\.png"):
        read_label(path)


def test_directory_is_not_an_image(tmp_path):
    with pytest.raises(TransegError, match=str(tmp_path.name)):
        read_image(tmp_path)


# --- palette and overlay ----------------------------------------------------------------------

def test_default_palette_voc_and_distinct():
    palette = default_palette(300)
    assert palette.shape == (300, 3) and palette.dtype == np.uint8
    assert palette[:4].tolist() == [[0, 0, 0], [128, 0, 0], [0, 128, 0], [128, 128, 0]]
    assert palette[7].tolist() == [128, 128, 128] and palette[15].tolist() == [192, 128, 128]  # VOC
    assert len({tuple(c) for c in palette}) == 300
    np.testing.assert_array_equal(default_palette(21), palette[:21])


def test_default_palette_rejects_zero():
    with pytest.raises(TransegError):
        default_palette(0)


def test_overlay_blends_and_keeps_ignored_pixels():
    image = np.full((2, 3, 3), 100, dtype=np.uint8)
    labels = np.array([[0, 1, 255], [2, 2, 1]])
    palette = np.array([[0, 0, 0], [200, 100, 0], [50, 50, 250]], dtype=np.uint8)
    out = overlay(image, labels, palette, alpha=0.5)
    assert out.dtype == np.uint8 and out.shape == (2, 3, 3)
    assert out[0, 0].tolist() == [50, 50, 50]
    assert out[0, 1].tolist() == [150, 100, 50]
    assert out[0, 2].tolist() == [100, 100, 100]  # ignore keeps the image
    assert out[1, 0].tolist() == [75, 75, 175]
    np.testing.assert_array_equal(overlay(image, labels, palette, alpha=0.0), image)


def test_overlay_label_out_of_palette():
    with pytest.raises(TransegError, match="palette"):
        overlay(np.zeros((1, 2, 3), np.uint8), np.array([[0, 5]]), default_palette(3))
