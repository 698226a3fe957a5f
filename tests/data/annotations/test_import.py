"""``transeg data import`` per format. The exports are built in the tests to each tool's documented
schema (COCO data format; CVAT for images 1.1 and Segmentation mask 1.1; LabelMe 5 JSON; Label
Studio JSON export with brush and polygon results; Pascal VOC SegmentationClass); the imported
folder is read back with transeg's own folder dataset."""

from __future__ import annotations

import base64
import io
import json
import zipfile

import numpy as np
import pycocotools.mask as coco_mask
import pytest
import yaml
from click.testing import CliRunner
from PIL import Image

from transeg.cli import cli
from transeg.data.annotations import brush
from transeg.data.datasets import folder

pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")


def run(*args):
    return CliRunner().invoke(cli, [str(a) for a in args])


def image(path, h=20, w=30, seed=0):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.random.default_rng(seed).integers(0, 255, (h, w, 3), dtype=np.uint8)).save(path)
    return path


def imported(out, split="train"):
    """{stem: label map} and the class names of the imported folder, read by the folder dataset."""
    dataset = folder(out, split)
    return {s[0].stem: dataset.load_label(i) for i, s in enumerate(dataset.samples)}, list(dataset.classes)


# --------------------------------------------------------------------------- COCO
def coco_export(tmp_path, **changes):
    image(tmp_path / "imgs" / "a.png")
    image(tmp_path / "imgs" / "b.png", 16, 12)
    box = np.zeros((16, 12), np.uint8)
    box[4:10, 2:9] = 1
    compressed = coco_mask.encode(np.asfortranarray(box))
    data = {
        "images": [{"id": 1, "file_name": "a.png", "height": 20, "width": 30},
                   {"id": 2, "file_name": "b.png", "height": 16, "width": 12}],
        "categories": [{"id": 7, "name": "car"}, {"id": 3, "name": "road"}],  # non-contiguous, unsorted
        "annotations": [
            {"id": 10, "image_id": 1, "category_id": 3, "iscrowd": 0,
             "segmentation": [[0.5, 0.5, 29, 0.5, 29, 12.3, 0.5, 12.3]]},
            {"id": 11, "image_id": 1, "category_id": 7, "iscrowd": 0,
             "segmentation": [[4.2, 2.7, 15.9, 6.1, 8.8, 17.4], [20, 14, 27, 14, 27, 19]]},
            {"id": 12, "image_id": 1, "category_id": 3, "iscrowd": 1,
             "segmentation": {"size": [20, 30], "counts": [5 * 20, 40, 25 * 20 - 40]}},
            {"id": 13, "image_id": 2, "category_id": 7, "iscrowd": 0,
             "segmentation": {"size": [16, 12], "counts": compressed["counts"].decode()}},
        ],
    }
    for key, value in changes.items():
        data[key] = value(data[key])
    (tmp_path / "ann.json").write_text(json.dumps(data))
    return data


def test_coco_import_matches_pycocotools(tmp_path):
    data = coco_export(tmp_path)
    result = run("data", "import", "coco", tmp_path / "ann.json", "--out", tmp_path / "ds",
                 "--images", tmp_path / "imgs", "--val-fraction", 0)
    assert result.exit_code == 0, result.output
    labels, classes = imported(tmp_path / "ds")
    assert classes == ["background", "road", "car"]  # categories sorted by id after background
    class_of = {3: 1, 7: 2}
    for img in data["images"]:
        expected = np.zeros((img["height"], img["width"]), np.uint8)
        for ann in data["annotations"]:  # painted in file order: the default rule `last`
            if ann["image_id"] == img["id"]:
                seg = ann["segmentation"]  # as the COCO API's annToRLE
                if isinstance(seg, dict) and isinstance(seg["counts"], str):
                    rles = {"size": seg["size"], "counts": seg["counts"].encode()}
                else:
                    rles = coco_mask.frPyObjects(seg, img["height"], img["width"])
                mask = coco_mask.decode(coco_mask.merge(rles) if isinstance(rles, list) else rles).astype(bool)
                expected[mask] = class_of[ann["category_id"]]
        assert np.array_equal(labels[img["file_name"][:-4]], expected)
    written = yaml.safe_load((tmp_path / "ds" / "classes.yaml").read_text())
    assert written["classes"] == classes and len(written["palette"]) == 3
    again = run("data", "import", "coco", tmp_path / "ann.json", "--out", tmp_path / "ds")
    assert again.exit_code == 2 and "already holds a dataset" in again.output


def test_no_background_and_val_split(tmp_path):
    coco_export(tmp_path)
    result = run("data", "import", "coco", tmp_path / "ann.json", "--out", tmp_path / "ds",
                 "--images", tmp_path / "imgs", "--no-background", "--val-fraction", 0.5, "--seed", 3)
    assert result.exit_code == 0, result.output
    train, classes = imported(tmp_path / "ds", "train")
    val, _ = imported(tmp_path / "ds", "val")
    assert classes == ["road", "car"] and len(train) == len(val) == 1
    assert (val.get("b", train.get("b")) == 255).sum() == 16 * 12 - 6 * 7  # unannotated → ignored
    for fraction in ("nan", "0.95", "-0.1"):
        refused = run("data", "import", "coco", tmp_path / "ann.json", "--out", tmp_path / "ds2", "--images",
                      tmp_path / "imgs", "--val-fraction", fraction)
        assert refused.exit_code == 2 and "--val-fraction" in refused.output


@pytest.mark.parametrize(("change", "message"), [
    ({"images": lambda v: [{**v[0], "file_name": "gone.png"}, v[1]]}, "annotation image 'gone.png': the image file "
                                                                      "is not found"),
    ({"annotations": lambda v: [{**v[0], "segmentation": [[1, 1, 5, 5]]}, *v[1:]]},
     "annotation id 10: a polygon of 2 point(s)"),
    ({"annotations": lambda v: [{**v[0], "category_id": 99}, *v[1:]]}, "annotation id 10: unknown category id 99"),
    ({"annotations": lambda v: [*v[:3], {**v[3], "segmentation": {**v[3]["segmentation"], "size": [12, 16]}}]},
     "annotation id 13: the RLE size [12, 16] disagrees"),
    ({"images": lambda v: [{**v[0], "height": 21}, v[1]], "annotations": lambda v: v[:2] + v[3:]},
     "annotation image 'a.png': the export says 30x21 but the image is 30x20"),
])
def test_bad_coco_exports_are_one_line_naming_file_and_annotation(tmp_path, change, message):
    coco_export(tmp_path, **change)
    args = ("data", "import", "coco", tmp_path / "ann.json", "--out", tmp_path / "ds", "--images", tmp_path / "imgs")
    result = run(*args)
    assert result.exit_code == 2
    assert result.output.count("\n") == 1 and str(tmp_path / "ann.json") in result.output
    assert message in result.output
    skipped = run(*args, "--on-bad-annotation", "skip")
    assert skipped.exit_code == 0, skipped.output
    assert "skipped 1 bad annotation" in skipped.output


def test_two_files_naming_the_same_image_differently(tmp_path):
    image(tmp_path / "a.png")
    image(tmp_path / "sub" / "a.png")
    for name, path in (("one.json", "a.png"), ("two.json", "sub/a.png")):
        (tmp_path / "lm" / name).parent.mkdir(exist_ok=True)
        (tmp_path / "lm" / name).write_text(json.dumps({"shapes": [], "imagePath": f"../{path}"}))
    result = run("data", "import", "labelme", tmp_path / "lm", "--out", tmp_path / "ds")
    assert result.exit_code == 2
    assert "two.json: annotation image '../sub/a.png': the same image 'a' is named '../a.png' in" in result.output


# --------------------------------------------------------------------------- LabelMe
def test_labelme_shapes_embedded_and_referenced_images(tmp_path):
    image(tmp_path / "lm" / "ref.jpg")
    png = io.BytesIO()
    Image.fromarray(np.full((10, 12, 3), 7, np.uint8)).save(png, format="PNG")
    shapes = [{"label": "box", "points": [[2, 1], [6, 5]], "shape_type": "rectangle", "group_id": None, "flags": {}},
              {"label": "dot", "points": [[4, 3], [4, 4]], "shape_type": "circle", "group_id": None, "flags": {}},
              {"label": "line", "points": [[20, 15], [28, 15]], "shape_type": "line", "group_id": None, "flags": {}},
              {"label": "dot", "points": [[4, 3]], "shape_type": "unknown-kind"}]
    (tmp_path / "lm" / "ref.json").write_text(json.dumps(
        {"version": "5.4.1", "flags": {}, "shapes": shapes, "imagePath": "ref.jpg", "imageData": None,
         "imageHeight": 20, "imageWidth": 30}))
    (tmp_path / "lm" / "emb.json").write_text(json.dumps(
        {"version": "5.4.1", "flags": {}, "imagePath": "emb.png", "imageHeight": 10, "imageWidth": 12,
         "imageData": base64.b64encode(png.getvalue()).decode(),
         "shapes": [{"label": "tri", "points": [[0, 0], [11, 0], [0, 9]], "shape_type": "polygon"}]}))
    result = run("data", "import", "labelme", tmp_path / "lm", "--out", tmp_path / "ds", "--val-fraction", 0,
                 "--overlap", "smaller-on-top")
    assert result.exit_code == 0, result.output
    labels, classes = imported(tmp_path / "ds")
    assert classes == ["background", "tri", "box", "dot", "line"]  # files sorted: emb.json first
    ref = labels["ref"]
    assert (ref[1:6, 2:7] != 0).all() and (ref[1:6, 2:7] == 2).sum() == 25 - (ref == 3).sum()
    assert ref[3, 4] == 3 and (ref == 3).sum() >= 5 and (ref[:, :10] > 0).sum() == 25  # the disc inside the box
    assert (ref[:, 10:] == 4).sum() > 0 and ref[15, 24] == 4 and ref[15, 29] == 0  # a 10-pixel stroke
    assert labels["emb"][0, 0] == 1 and labels["emb"][9, 11] == 0
    assert (tmp_path / "ds" / "images" / "train" / "emb.png").read_bytes() == png.getvalue()


# --------------------------------------------------------------------------- Label Studio
def test_labelstudio_brush_and_polygon(tmp_path):
    image(tmp_path / "imgs" / "street.png", 20, 30)
    brush_mask = np.zeros((20, 30), bool)
    brush_mask[5:15, 10:20] = True
    tasks = [{"id": 1, "data": {"image": "/data/upload/3/8f3a2b1c-street.png"}, "annotations": [{
        "id": 4, "was_cancelled": False, "result": [
            {"id": "p1", "type": "polygonlabels", "from_name": "label", "to_name": "image", "original_width": 30,
             "original_height": 20, "value": {"points": [[0, 0], [50, 0], [50, 50], [0, 50]],
                                             "polygonlabels": ["Sky"], "closed": True}},
            {"id": "b1", "type": "brushlabels", "from_name": "tag", "to_name": "image", "original_width": 30,
             "original_height": 20, "value": {"format": "rle", "rle": brush.encode_mask(brush_mask),
                                             "brushlabels": ["Car"]}}]}]}]
    (tmp_path / "ls.json").write_text(json.dumps(tasks))
    result = run("data", "import", "labelstudio", tmp_path / "ls.json", "--out", tmp_path / "ds",
                 "--images", tmp_path / "imgs", "--val-fraction", 0)
    assert result.exit_code == 0, result.output
    labels, classes = imported(tmp_path / "ds")
    assert classes == ["background", "Sky", "Car"]
    expected = np.zeros((20, 30), np.uint8)
    expected[0:11, 0:16] = 1  # the polygon 0..15 x 0..10 in pixels, outline included
    expected[brush_mask] = 2
    assert np.array_equal(labels["street"], expected)
    tasks[0]["annotations"][0]["result"][1]["original_height"] = 20
    tasks[0]["annotations"][0]["result"][1]["value"]["rle"] = brush.encode_mask(np.ones((10, 30), bool))
    (tmp_path / "ls.json").write_text(json.dumps(tasks))
    bad = run("data", "import", "labelstudio", tmp_path / "ls.json", "--out", tmp_path / "ds2",
              "--images", tmp_path / "imgs")
    assert bad.exit_code == 2 and "annotation result 'b1': a bad brush RLE" in bad.output


# --------------------------------------------------------------------------- CVAT
CVAT_XML = """<?xml version="1.0" encoding="utf-8"?>
<annotations>
  <version>1.1</version>
  <meta><task><labels>
    <label><name>road</name><color>#ff0000</color><type>any</type><attributes/></label>
    <label><name>car</name><color>#00ff00</color><type>any</type><attributes/></label>
  </labels></task></meta>
  <image id="0" name="frames/f0.png" width="30" height="20">
    <mask label="car" source="manual" occluded="0" rle="{rle}" left="3" top="2" width="4" height="3" z_order="1"/>
    <polygon label="road" source="manual" occluded="0" points="0.0,0.0;29.0,0.0;29.0,9.5;0.0,9.5" z_order="0"/>
    <box label="car" source="manual" occluded="0" xtl="1" ytl="1" xbr="5" ybr="5" z_order="0"/>
  </image>
</annotations>"""


def test_cvat_xml_polygons_and_masks(tmp_path):
    image(tmp_path / "frames" / "f0.png")
    box = np.array([[0, 1, 1, 0], [1, 1, 1, 1], [0, 0, 1, 0]], bool)
    (tmp_path / "annotations.xml").write_text(CVAT_XML.format(rle="1,2,1,4,2,1,1"))
    result = run("data", "import", "cvat", tmp_path / "annotations.xml", "--out", tmp_path / "ds",
                 "--val-fraction", 0)
    assert result.exit_code == 0, result.output
    labels, classes = imported(tmp_path / "ds")
    expected = np.zeros((20, 30), np.uint8)
    expected[coco_mask.decode(coco_mask.merge(coco_mask.frPyObjects(
        [[0, 0, 29, 0, 29, 9.5, 0, 9.5]], 20, 30))).astype(bool)] = 1
    expected[2:5, 3:7][box] = 2  # z_order 1 over the polygon though listed first
    assert classes == ["background", "road", "car"]
    assert np.array_equal(labels["f0"], expected)
    assert yaml.safe_load((tmp_path / "ds" / "classes.yaml").read_text())["palette"][1:] == [[255, 0, 0], [0, 255, 0]]
    (tmp_path / "annotations.xml").write_text(CVAT_XML.format(rle="1,2,1").replace('label="road"', 'label="x"'))
    bad = run("data", "import", "cvat", tmp_path / "annotations.xml", "--out", tmp_path / "d2",
              "--on-bad-annotation", "skip")
    assert bad.exit_code == 0 and "skipped 2 bad annotation(s)" in bad.output


def test_cvat_segmentation_mask_zip(tmp_path):
    colours = {"background": (0, 0, 0), "road": (128, 64, 128), "car": (0, 0, 142)}
    truth = np.random.default_rng(0).integers(0, 3, (20, 30)).astype(np.uint8)
    rgb = np.array(list(colours.values()), np.uint8)[truth]
    png = io.BytesIO()
    Image.fromarray(rgb).save(png, format="PNG")
    with zipfile.ZipFile(tmp_path / "export.zip", "w") as archive:
        archive.writestr("labelmap.txt", "# label:color_rgb:parts:actions\n" + "".join(
            f"{n}:{','.join(map(str, c))}::\n" for n, c in colours.items()))
        archive.writestr("SegmentationClass/f0.png", png.getvalue())
        archive.writestr("ImageSets/Segmentation/default.txt", "f0\n")
    image(tmp_path / "imgs" / "f0.jpg")
    result = run("data", "import", "cvat", tmp_path / "export.zip", "--out", tmp_path / "ds",
                 "--images", tmp_path / "imgs", "--val-fraction", 0)
    assert result.exit_code == 0, result.output
    labels, classes = imported(tmp_path / "ds")
    assert classes == list(colours) and np.array_equal(labels["f0"], truth)


# --------------------------------------------------------------------------- VOC
def test_voc_palette_pngs(tmp_path):
    truth = np.random.default_rng(1).integers(0, 21, (20, 30)).astype(np.uint8)
    truth[0] = 255  # VOC's object outlines: ignored
    (tmp_path / "voc" / "SegmentationClass").mkdir(parents=True)
    mask = Image.fromarray(truth, mode="L").convert("P")
    mask.putpalette(np.random.default_rng(2).integers(0, 255, 768).tolist())
    mask.save(tmp_path / "voc" / "SegmentationClass" / "2007_000032.png")
    image(tmp_path / "voc" / "JPEGImages" / "2007_000032.jpg")
    result = run("data", "import", "voc", tmp_path / "voc", "--out", tmp_path / "ds", "--val-fraction", 0)
    assert result.exit_code == 0, result.output
    labels, classes = imported(tmp_path / "ds")
    assert len(classes) == 21 and classes[0] == "background"
    assert np.array_equal(labels["2007_000032"], truth)


def test_an_imported_export_passes_data_check_and_trains(tmp_path):
    coco_export(tmp_path)
    image(tmp_path / "imgs" / "c.png", 24, 24, seed=3)
    assert run("data", "import", "coco", tmp_path / "ann.json", "--out", tmp_path / "ds", "--images",
               tmp_path / "imgs", "--val-fraction", 0.5).exit_code == 0
    config = tmp_path / "config.yaml"
    config.write_text(
        f"data: {{dataset: folder, root: {tmp_path / 'ds'}, crop_size: [32, 32], scale: [32, 32], test_scale: null, "
        "num_workers: 0, val_split: val}\n"
        "model: {name: segformer-b0}\n"
        "schedule: {iterations: 1, warmup_iters: 0}\n"
        "train: {batch_size: 2, eval_interval: 1, checkpoint_interval: 1, log_interval: 1}\n"
        f"output_dir: {tmp_path / 'run'}\n")
    check = run("data", "check", config)
    assert check.exit_code == 0, check.output
    trained = run("train", config)
    assert trained.exit_code == 0, trained.output


def test_labelme_windows_image_path(tmp_path):
    image(tmp_path / "images" / "w.jpg")
    (tmp_path / "lm").mkdir()
    (tmp_path / "lm" / "w.json").write_text(json.dumps(
        {"shapes": [{"label": "a", "points": [[0, 0], [9, 0], [0, 9]], "shape_type": "polygon"}],
         "imagePath": "..\\images\\w.jpg", "imageData": None, "imageHeight": 20, "imageWidth": 30}))
    result = run("data", "import", "labelme", tmp_path / "lm", "--out", tmp_path / "ds", "--val-fraction", 0)
    assert result.exit_code == 0, result.output
    assert list(imported(tmp_path / "ds")[0]) == ["w"]


def test_exif_rotated_images_are_labelled_upright(tmp_path):
    """A phone photo stored 30 wide x 20 high with EXIF orientation 6 shows (and trains) 20 wide x 30 high."""
    exif = Image.Exif()
    exif[0x0112] = 6
    (tmp_path / "lm").mkdir()
    Image.fromarray(np.zeros((20, 30, 3), np.uint8)).save(tmp_path / "lm" / "p.jpg", exif=exif)
    (tmp_path / "lm" / "p.json").write_text(json.dumps(
        {"shapes": [{"label": "a", "points": [[0, 0], [5, 29]], "shape_type": "rectangle"}],
         "imagePath": "p.jpg", "imageHeight": 30, "imageWidth": 20}))
    result = run("data", "import", "labelme", tmp_path / "lm", "--out", tmp_path / "ds", "--val-fraction", 0)
    assert result.exit_code == 0, result.output
    sample = folder(tmp_path / "ds", "train").load(0)  # the loader's own size check passes
    assert sample["image"].shape[:2] == sample["label"].shape == (30, 20)
