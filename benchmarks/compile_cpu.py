"""torch.compile against eager on the CPU: segformer-b0, whole image 512x512, batch 1, 2 threads, the
two called alternately (so that load from other processes hits both alike); median and min latency and
the first call's compilation time.

    python benchmarks/compile_cpu.py [--repeats 20]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from functools import partial
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import transeg
from benchmarks.timing import interleaved_times
from transeg.inference.backends import optimize_for_inference


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    model = transeg.create_model("segformer-b0", num_classes=150).eval()
    eager, compiled = optimize_for_inference(model, "eager"), optimize_for_inference(model, "compile")
    x = torch.randn(1, 3, 512, 512)
    with torch.inference_mode():
        start = time.perf_counter()
        compiled(x)
        compile_s = time.perf_counter() - start
        worst = (eager(x) - compiled(x)).abs().max().item()
        times = interleaved_times({"eager": partial(eager, x), "compile": partial(compiled, x)}, args.repeats,
                                  warmup=0)
    print(f"segformer-b0 512x512, {args.threads} threads, {args.repeats} alternating calls each")
    print(f"compile: first call {compile_s:.1f} s; max |compiled - eager| logit {worst:.1e}")
    for name, seconds in times.items():
        print(f"{name:8s} median {statistics.median(seconds) * 1e3:7.1f} ms   min {min(seconds) * 1e3:7.1f} ms")


if __name__ == "__main__":
    main()
