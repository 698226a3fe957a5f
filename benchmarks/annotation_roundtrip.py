"""CamVid's ground truth through every tool format and back: export the label maps as COCO, Label Studio
and CVAT files (``transeg.data.annotations.export``), import them (``transeg data import``) and count
the pixels that differ; also times both directions.

    python benchmarks/annotation_roundtrip.py --root ../shared/data/camvid --split val [--limit N]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from transeg.data.annotations.export import write_export
from transeg.data.annotations.importer import import_annotations
from transeg.data.datasets import folder
from transeg.data.images import read_label
from transeg.data.labels import CAMVID_CLASSES

CLASSES = [*CAMVID_CLASSES, "void"]  # the raw values 0..11, void included, so every pixel has a class


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", type=Path, default=Path("../shared/data/camvid"))
    parser.add_argument("--split", default="val")
    parser.add_argument("--limit", type=int, default=None)
    args = parser.parse_args()
    labels_dir, images_dir = args.root / "labels" / args.split, args.root / "images" / args.split
    pairs = [(images_dir / f"{p.stem}.jpg", p) for p in sorted(labels_dir.glob("*.png"))][: args.limit]
    print(f"{len(pairs)} CamVid {args.split} label maps, {len(CLASSES)} values")
    failures = 0
    for fmt in ("coco", "labelstudio", "cvat"):
        with tempfile.TemporaryDirectory() as tmp:
            start = time.perf_counter()
            export = write_export(fmt, pairs, Path(tmp), CLASSES, None)
            exported = time.perf_counter() - start
            start = time.perf_counter()
            import_annotations(fmt, export, Path(tmp) / "ds", images=images_dir, background=None, val_fraction=0)
            imported = time.perf_counter() - start
            dataset = folder(Path(tmp) / "ds", "train")
            names = np.array(dataset.classes)
            wrong = sum(int((names[dataset.load_label(i)] != np.array(CLASSES)[read_label(label)]).sum())
                        for i, (_, label) in enumerate(pairs))
            failures += wrong > 0
            print(f"{fmt:12s} export {exported:6.2f} s ({export.stat().st_size / 1e6:5.2f} MB)  "
                  f"import {imported:6.2f} s  pixels differing {wrong}")
    return int(failures > 0)


if __name__ == "__main__":
    sys.exit(main())
