"""N-band GeoTIFFs: a 5-band model trains a step on a folder dataset of 5-band TIFFs and predicts a
5-band GeoTIFF to a GeoTIFF label map carrying the same georeference; pretrained RGB patch
embeddings adapted to N bands keep a constant image's response."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import transeg
from transeg.data.datasets import folder
from transeg.data.rasters import GEO_TAGS, RasterReader, read_raster, write_label_tiff
from transeg.data.transforms import Compose, Normalize, RandomFlip
from transeg.inference.modes import Predictor
from transeg.inference.predict import predict_files
from transeg.weights.channels import adapt_input_conv

tifffile = pytest.importorskip("tifffile")

# A UTM 32N image, 10 m pixels: scale, tie point, key directory, double and ASCII parameters.
GEO = [(33550, 12, 3, (10.0, 10.0, 0.0), True),
       (33922, 12, 6, (0.0, 0.0, 0.0, 500000.0, 5200000.0, 0.0), True),
       (34735, 3, 16, (1, 1, 0, 3, 1024, 0, 1, 1, 1025, 0, 1, 1, 3072, 0, 1, 32632), True),
       (34736, 12, 1, (6378137.0,), True),
       (34737, 2, 27, "WGS 84 / UTM zone 32N|WGS84", True)]
BANDS, MEAN, STD = 5, (1000.0, 1100.0, 900.0, 2000.0, 1500.0), (300.0, 250.0, 280.0, 500.0, 400.0)


def _geotiff(path, height=70, width=90, seed=0, **layout):
    image = np.random.default_rng(seed).integers(0, 4000, (height, width, BANDS)).astype(np.uint16)
    tifffile.imwrite(path, image, photometric="minisblack", planarconfig="contig", compression="zlib",
                     extratags=GEO, **layout)
    return image


def _tags(path):
    with tifffile.TiffFile(path) as tif:
        return {code: tif.pages[0].tags[code].value for code in GEO_TAGS if code in tif.pages[0].tags}


@pytest.mark.parametrize("layout", [{"tile": (32, 32)}, {"rowsperstrip": 7}, {}])
def test_reader_decodes_only_the_rows_asked(tmp_path, layout):
    image = _geotiff(tmp_path / "a.tif", **layout)
    with RasterReader(tmp_path / "a.tif") as reader:
        assert (reader.height, reader.width, reader.channels) == image.shape
        for y1, y2 in [(0, 70), (5, 9), (31, 33), (63, 70), (0, 1)]:
            assert np.array_equal(reader.read_rows(y1, y2), image[y1:y2])
        assert {t.code: t.value for t in reader.geotags} == {t[0]: t[3] for t in GEO}


def test_label_tiff_round_trip(tmp_path):
    labels = np.random.default_rng(1).integers(0, 7, (101, 45)).astype(np.uint8)
    blocks = [labels[:10], labels[10:11], labels[11:80], labels[80:]]
    with RasterReader(_write_geo(tmp_path)) as reader:
        write_label_tiff(tmp_path / "l.tif", blocks, 101, 45, palette=np.arange(21).reshape(7, 3),
                         geotags=reader.geotags, tile=16)
    assert np.array_equal(tifffile.imread(tmp_path / "l.tif"), labels)
    assert _tags(tmp_path / "l.tif") == {t[0]: t[3] for t in GEO}


def _write_geo(tmp_path):
    _geotiff(tmp_path / "geo.tif", height=8, width=8)
    return tmp_path / "geo.tif"


def test_five_band_model_trains_and_predicts_a_geotiff(tmp_path):
    root = tmp_path / "data"
    for split in ("train",):
        (root / "images" / split).mkdir(parents=True)
        (root / "labels" / split).mkdir(parents=True)
        for i in range(2):
            image = _geotiff(root / "images" / split / f"s{i}.tif", 64, 64, seed=i)
            label = (image[..., 3] > 2000).astype(np.uint8)  # the class lives in the fourth band
            from PIL import Image
            Image.fromarray(label).save(root / "labels" / split / f"s{i}.png")
    (root / "classes.yaml").write_text("classes: [land, water]\nbands: 5\n")
    dataset = folder(root, "train", transform=Compose([RandomFlip(), Normalize(MEAN, STD)]))
    torch.manual_seed(0)
    model = transeg.create_model("segformer-b0", num_classes=2, in_channels=BANDS, mean=MEAN, std=STD)
    assert model.in_channels == BANDS and model.config.mean == MEAN
    batch = [dataset[i] for i in range(len(dataset))]
    x, y = torch.stack([s["image"] for s in batch]), torch.stack([s["label"] for s in batch])
    assert x.shape == (2, BANDS, 64, 64)
    model.train()
    before = model.encoder.state_dict()[_first_conv(model)].clone()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    logits = F.interpolate(model(x), size=y.shape[-2:], mode="bilinear", align_corners=False)
    loss = F.cross_entropy(logits, y, ignore_index=255)
    loss.backward()
    optimizer.step()
    assert torch.isfinite(loss)
    after = model.encoder.state_dict()[_first_conv(model)]
    assert (after - before).abs().sum(dim=(0, 2, 3)).gt(0).all()  # every band's embedding weights learned

    model.eval()
    scene = tmp_path / "scene.tif"
    image = _geotiff(scene, 150, 110, seed=9, tile=(32, 32))
    written = predict_files(model, [str(scene)], tmp_path / "out", mode="slide", crop=64, stride=48)
    assert written == [tmp_path / "out" / "scene.tif"]
    assert _tags(written[0]) == _tags(scene)
    expected = Predictor(model, mode="slide", crop=64, stride=48).predict(read_raster(scene))
    assert np.array_equal(tifffile.imread(written[0]), expected)
    assert (tmp_path / "out" / "scene_overlay.jpg").is_file()
    assert image.shape == (150, 110, BANDS)


def _first_conv(model):
    return "stages.0.patch_embed.proj.weight" if "stages.0.patch_embed.proj.weight" in model.encoder.state_dict() \
        else next(k for k, v in model.encoder.state_dict().items() if v.ndim == 4)


@pytest.mark.parametrize("bands", [1, 2, 4, 5, 6, 9])
def test_adapted_weights_keep_a_constant_images_response(bands):
    weight = torch.randn(8, 3, 7, 7, dtype=torch.float64)
    adapted = adapt_input_conv(weight, bands)
    assert adapted.shape == (8, bands, 7, 7)
    torch.testing.assert_close(adapted.sum(1), weight.sum(1), rtol=0, atol=1e-12)
    value = 0.37  # one constant in every band: the same embedding as the RGB image of that constant
    rgb = F.conv2d(torch.full((1, 3, 9, 9), value, dtype=torch.float64), weight)
    nband = F.conv2d(torch.full((1, bands, 9, 9), value, dtype=torch.float64), adapted)
    torch.testing.assert_close(nband, rgb, rtol=0, atol=1e-12)
    if bands % 3 == 0:  # repeated and rescaled by 3/N
        torch.testing.assert_close(adapted, weight.repeat(1, bands // 3, 1, 1) * 3 / bands)


@pytest.mark.parametrize("name", ["segformer-b0", "segmenter-t16-linear", "upernet-swin-t", "segformer-r50"])
def test_every_encoder_takes_n_bands_with_the_same_keys(name):
    rgb = transeg.create_model(name, num_classes=3)
    nband = transeg.create_model(name, num_classes=3, in_channels=4)
    assert list(nband.state_dict()) == list(rgb.state_dict())  # checkpoints keep their keys
    with torch.inference_mode():
        out = nband(torch.randn(1, 4, 64, 64))
    assert out.shape[:2] == (1, 3) and nband.config.mean == (*rgb.config.mean, rgb.config.mean[0])


def test_mit_pretrained_weights_adapted_when_loaded(tmp_path):
    from tests.conftest import hf_segformer
    from tests.weights.test_segformer import official_state_from_hf

    official = official_state_from_hf(hf_segformer("b0", num_labels=2, seed=5))
    backbone = {k.removeprefix("backbone."): v for k, v in official.items() if k.startswith("backbone.")}
    torch.save(backbone, tmp_path / "mit_b0.pth")
    rgb = transeg.create_model("segformer-b0", num_classes=2, encoder_weights=tmp_path / "mit_b0.pth")
    nband = transeg.create_model("segformer-b0", num_classes=2, encoder_weights=tmp_path / "mit_b0.pth",
                                 in_channels=BANDS)
    key = "stages.0.patch_embed.proj.weight"
    rgb_state, nband_state = rgb.encoder.state_dict(), nband.encoder.state_dict()
    assert torch.equal(nband_state[key], adapt_input_conv(rgb_state[key], BANDS))
    assert all(torch.equal(v, nband_state[k]) for k, v in rgb_state.items() if k != key)
    with torch.inference_mode():  # a constant image: the same features as the RGB model's
        torch.testing.assert_close(nband.encoder(torch.full((1, BANDS, 64, 64), 0.5))[-1],
                                   rgb.encoder(torch.full((1, 3, 64, 64), 0.5))[-1], rtol=1e-5, atol=1e-5)
