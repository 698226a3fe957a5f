"""Peak memory of band-by-band slide inference against the image's height (it should stay flat).

For each height, a child process writes a tiled, deflate-compressed W x H RGB TIFF (smooth colour
ramps plus noise), segments it with segformer-b0 (random weights, 19 classes) in slide mode through
``predict_files`` (the code ``transeg predict --mode slide`` runs: rows read a window row at a time,
labels written as tiled TIFF rows) and reports its wall time and peak RSS (getrusage maxrss). The
whole-image canvas the previous slide mode held, K x H x W float32 logits, is printed beside it.

    python benchmarks/huge_image.py --width 2048 --heights 2048 4096 8192 --crop 512 --stride 384
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

CLASSES = 19


def write_input(path: Path, height: int, width: int, tile: int = 512) -> None:
    """A tiled TIFF written a tile row at a time (never the whole image in memory)."""
    import tifffile

    rng = np.random.default_rng(0)

    def tiles():
        cols = np.arange(-(-width // tile) * tile)
        for top in range(0, height, tile):
            rows = np.arange(top, top + tile)[:, None]
            band = np.stack([(rows + 0 * cols) % 256, (cols + 0 * rows) % 256, ((rows + cols) // 7) % 256], -1)
            band = (band + rng.integers(0, 16, band.shape)).clip(0, 255).astype(np.uint8)
            for left in range(0, width, tile):
                yield band[:, left:left + tile]

    tifffile.imwrite(path, data=tiles(), shape=(height, width, 3), dtype=np.uint8, tile=(tile, tile),
                     photometric="rgb", compression="zlib")


def child(height: int, width: int, crop: int, stride: int, batch: int) -> dict:
    import torch

    import transeg
    from transeg.inference.predict import predict_files

    torch.manual_seed(0)
    model = transeg.create_model("segformer-b0", num_classes=CLASSES)
    with tempfile.TemporaryDirectory() as tmp:
        image = Path(tmp) / "huge.tif"
        write_input(image, height, width)
        base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        start = time.perf_counter()
        predict_files(model, [str(image)], Path(tmp) / "out", mode="slide", crop=crop, stride=stride,
                      batch_size=batch)
        seconds = time.perf_counter() - start
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return {"height": height, "width": width, "seconds": round(seconds, 1), "peak_rss_mib": round(peak / 1024),
            "rss_before_predict_mib": round(base / 1024),
            "whole_canvas_mib": round(CLASSES * height * width * 4 / 2**20)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--width", type=int, default=20000)
    parser.add_argument("--heights", type=int, nargs="+", default=[2048, 4096, 8192])
    parser.add_argument("--crop", type=int, default=1024)
    parser.add_argument("--stride", type=int, default=768)
    parser.add_argument("--batch-size", type=int, default=1)
    parser.add_argument("--child", type=int, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child is not None:
        print(json.dumps(child(args.child, args.width, args.crop, args.stride, args.batch_size)))
        return
    print(f"segformer-b0, {CLASSES} classes, slide {args.crop}/{args.stride}, width {args.width}, "
          f"torch threads {os.environ.get('OMP_NUM_THREADS', 'default')}")
    print(f"{'height':>7} {'seconds':>8} {'peak RSS MiB':>13} {'RSS before MiB':>15} {'whole canvas MiB':>17}")
    for height in args.heights:
        out = subprocess.run([sys.executable, __file__, "--child", str(height), "--width", str(args.width),
                              "--crop", str(args.crop), "--stride", str(args.stride),
                              "--batch-size", str(args.batch_size)], check=True, capture_output=True, text=True)
        r = json.loads(out.stdout.strip().splitlines()[-1])
        print(f"{r['height']:>7} {r['seconds']:>8} {r['peak_rss_mib']:>13} {r['rss_before_predict_mib']:>15} "
              f"{r['whole_canvas_mib']:>17}", flush=True)


if __name__ == "__main__":
    main()
