"""Exports of the wrong shape: every key of a COCO, LabelMe and Label Studio file (and every attribute
of a CVAT XML shape) replaced by values of the wrong type or range, and zip exports with bytes
flipped, end with exit code 0 (the record skipped) or 2 and one ``error:`` line, never a traceback."""

from __future__ import annotations

import copy
import io
import json
import zipfile

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from tests.data.annotations.test_import import CVAT_XML, coco_export, image
from transeg.cli import cli
from transeg.data.annotations import brush

pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")

HOSTILE = [None, "x", -1, 1e300, [[]], {"a": 1}]


def paths(obj, prefix=()):
    """Every key path of a JSON document (the first two items of lists)."""
    yield prefix
    items = obj.items() if isinstance(obj, dict) else enumerate(obj[:2]) if isinstance(obj, list) else []
    for key, value in items:
        yield from paths(value, (*prefix, key))


def replaced(doc, path, value):
    doc = copy.deepcopy(doc)
    if not path:
        return value
    target = doc
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = value
    return doc


def documents(tmp_path):
    yield "coco", coco_export(tmp_path)
    yield "labelme", {"shapes": [{"label": "box", "points": [[2, 1], [6, 5]], "shape_type": "rectangle"},
                                 {"label": "p", "points": [[2, 1], [6, 5], [1, 9]]}],
                      "imagePath": "imgs/a.png", "imageHeight": 20, "imageWidth": 30}
    yield "labelstudio", [{"data": {"image": "/data/upload/3/x-a.png"}, "annotations": [{"result": [
        {"id": "p", "type": "polygonlabels", "original_width": 30, "original_height": 20,
         "value": {"points": [[0, 0], [50, 0], [50, 50]], "polygonlabels": ["Sky"]}},
        {"id": "b", "type": "brushlabels", "original_width": 30, "original_height": 20,
         "value": {"rle": brush.encode_mask(np.ones((20, 30), bool))[:12], "brushlabels": ["Car"]}}]}]}]


def outcome(*args):
    result = CliRunner().invoke(cli, [str(a) for a in args])
    crashed = result.exception is not None and not isinstance(result.exception, SystemExit)
    one_line = result.exit_code == 2 and result.output.count("error:") == 1
    return None if not crashed and (result.exit_code == 0 or one_line) else f"{result.exit_code} {result.exception!r}"


def test_json_exports_of_the_wrong_shape(tmp_path):
    problems = []
    for fmt, doc in documents(tmp_path):
        for path in paths(doc):
            for value in HOSTILE:
                (tmp_path / "h.json").write_text(json.dumps(replaced(doc, path, value)))
                bad = outcome("data", "import", fmt, tmp_path / "h.json", "--out", tmp_path / "o",
                              "--images", tmp_path / "imgs", "--on-bad-annotation", "skip")
                if bad:
                    problems.append(f"{fmt} {path} = {value!r}: {bad}")
    assert not problems, problems[:5]


@pytest.mark.parametrize("attribute", ["rle", "left", "top", "width", "height", "points", "z_order", "label"])
def test_cvat_xml_attributes_of_the_wrong_shape(tmp_path, attribute):
    image(tmp_path / "frames" / "f0.png")
    for value in ["", "x", "-1", "1e300", "nan", "1,2,3", "99999999"]:
        xml = CVAT_XML.format(rle="1,2,1,4,2,1,1").replace(f'{attribute}="', f'{attribute}="{value}" old="')
        (tmp_path / "annotations.xml").write_text(xml)
        assert outcome("data", "import", "cvat", tmp_path / "annotations.xml", "--out", tmp_path / "o") is None, value


def test_damaged_zip_exports(tmp_path):
    png = io.BytesIO()
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(png, format="PNG")
    archive = io.BytesIO()
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr("labelmap.txt", "background:0,0,0::\ncar:255,0,0::\n")
        z.writestr("SegmentationClass/a.png", png.getvalue())
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(tmp_path / "a.png")
    rng = np.random.default_rng(0)
    problems = []
    for trial in range(120):  # a few bytes flipped anywhere: headers, names, compressed data, CRCs
        damaged = bytearray(archive.getvalue())
        for i in rng.integers(0, len(damaged), rng.integers(1, 6)):
            damaged[i] ^= int(rng.integers(1, 256))
        (tmp_path / "export.zip").write_bytes(bytes(damaged))
        bad = outcome("data", "import", "cvat", tmp_path / "export.zip", "--out", tmp_path / f"o{trial}",
                      "--images", tmp_path)
        if bad:
            problems.append(bad)
    assert not problems, problems[:3]
