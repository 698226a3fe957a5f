"""How a dataset's ground truth splits into small / medium / large segments (Segmenter Table 4's buckets).

For each label map of a split: its connected segments (``transeg.data.segments``), bucketed by area
with ``transeg.engine.object_size`` (COCO's 32² and 96² pixel areas unless ``--thresholds``). Prints
the segment count and share of labelled pixels of each bucket, and the labelling time per map.

    python benchmarks/object_sizes.py --dataset camvid --root ../shared/data/camvid --split val
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from transeg.data.datasets import build_dataset
from transeg.engine.object_size import BUCKETS, COCO_THRESHOLDS, segment_buckets


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", default="camvid")
    parser.add_argument("--root", required=True)
    parser.add_argument("--split", default="val")
    parser.add_argument("--thresholds", type=int, nargs=2, default=COCO_THRESHOLDS, metavar=("A", "B"))
    parser.add_argument("--connectivity", type=int, choices=(4, 8), default=4)
    args = parser.parse_args()
    dataset = build_dataset(args.dataset, args.root, args.split)
    segments, pixels, seconds, shape = np.zeros(3, int), np.zeros(3, int), 0.0, None
    for i in range(len(dataset)):
        label = dataset.load(i)["label"]
        shape = label.shape
        start = time.perf_counter()
        pixel_bucket, bucket, _ = segment_buckets(label, tuple(args.thresholds), dataset.ignore_index,
                                                  args.connectivity)
        seconds += time.perf_counter() - start
        segments += np.bincount(bucket, minlength=3)
        pixels += np.bincount(pixel_bucket[pixel_bucket >= 0], minlength=3)
    print(f"{args.dataset}/{args.split}: {len(dataset)} label maps ({shape[0]}x{shape[1]} the last), "
          f"thresholds {args.thresholds[0]} {args.thresholds[1]} px, {args.connectivity}-connected, "
          f"{1000 * seconds / len(dataset):.1f} ms per map")
    print("| Bucket | Segments | Labelled pixels |\n|---|---|---|")
    for name, count, share in zip(BUCKETS, segments, pixels / pixels.sum(), strict=True):
        print(f"| {name} | {count} | {100 * share:.2f} % |")


if __name__ == "__main__":
    main()
