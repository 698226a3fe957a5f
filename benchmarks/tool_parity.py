"""The importer against the labelling tools' own code: LabelMe's ``shape_to_mask`` (every shape type) and
Label Studio's brush RLE codec (``label_studio_converter.brush``: its decoder reads our encoding, ours
reads its encoding), on random shapes and masks. The two modules need only NumPy and Pillow; they are
loaded from the tools' wheels, whose other dependencies (Qt, pandas, …) are not installed:

    pip download labelme label-studio-converter --no-deps -d wheels
    python benchmarks/tool_parity.py --wheels wheels [--count 3000]
"""

from __future__ import annotations

import argparse
import importlib.util
import sys
import tempfile
import types
import zipfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from transeg.data.annotations import brush
from transeg.data.annotations.rasterise import pil_shape

POINTS = {"polygon": 6, "rectangle": 2, "circle": 2, "oriented_rectangle": 4, "line": 2, "linestrip": 5, "point": 1}


def load(wheel: Path, member: str, scratch: Path) -> types.ModuleType:
    """The module file ``member`` of ``wheel``, loaded on its own (its package's __init__ is not run)."""
    with zipfile.ZipFile(wheel) as archive:
        path = Path(archive.extract(member, scratch))
    sys.modules.setdefault("labelme._label_file", types.SimpleNamespace(ShapeDict=dict))  # a typing-only import
    spec = importlib.util.spec_from_file_location(path.stem, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def labelme_parity(shape_module: types.ModuleType, count: int, rng: np.random.Generator) -> int:
    differ = 0
    for i in range(count):
        kind = list(POINTS)[i % len(POINTS)]
        h, w = (int(v) for v in rng.integers(1, 80, 2))
        points = rng.uniform(-10, 90, (POINTS[kind], 2)).tolist()
        theirs = shape_module.shape_to_mask((h, w), points, None if kind == "polygon" else kind)
        differ += not np.array_equal(theirs, pil_shape(kind, points, h, w))
    return differ


def brush_parity(converter: types.ModuleType, count: int, rng: np.random.Generator) -> int:
    differ = 0
    for i in range(count):
        h, w = (int(v) for v in rng.integers(1, 120, 2))
        mask = rng.random((h, w)) < rng.random() if i % 2 else np.zeros((h, w), bool)
        if i % 2 == 0:
            mask[rng.integers(0, h):, rng.integers(0, w):] = True
        theirs_reads_ours = converter.decode_rle(bytes(brush.encode_mask(mask))).reshape(h, w, 4)[:, :, 3] > 0
        ours_reads_theirs = brush.decode_mask(converter.mask2rle(mask.astype(np.uint8) * 255), h, w)
        differ += not (np.array_equal(theirs_reads_ours, mask) and np.array_equal(ours_reads_theirs, mask))
    return differ


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--wheels", type=Path, required=True, help="folder with the labelme and "
                        "label-studio-converter wheels")
    parser.add_argument("--count", type=int, default=3000)
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    with tempfile.TemporaryDirectory() as scratch:
        labelme = next(args.wheels.glob("labelme-*.whl"))
        converter = next(args.wheels.glob("label_studio_converter-*.whl"))
        shapes = load(labelme, "labelme/utils/shape.py", Path(scratch))
        codec = load(converter, "label_studio_converter/brush.py", Path(scratch))
        shape_differ = labelme_parity(shapes, args.count, rng)
        brush_differ = brush_parity(codec, args.count // 3, rng)
    print(f"{labelme.name}: shape_to_mask vs ours, {args.count} random shapes "
          f"({', '.join(POINTS)}): {shape_differ} differ")
    print(f"{converter.name}: brush RLE both ways, {args.count // 3} random masks: {brush_differ} differ")
    return int(shape_differ + brush_differ > 0)


if __name__ == "__main__":
    sys.exit(main())
