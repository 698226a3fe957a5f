"""SegFormer-B0 and B5 inference FPS at 1024x2048 (Cityscapes, 19 classes) on one GPU in fp32, bf16 and
fp16, eager and torch.compile, against SegFormer Table 2 (V100: B0 15.2 FPS, B5 2.5 FPS; the goal here
is 3x those), and B0 training images/s at 1024x1024 crops. What ``benchmarks/gpu_check.sh`` runs.

    python benchmarks/gpu_fps.py [--out gpu_fps.json] [--budget-s 300]
    python benchmarks/gpu_fps.py --dry-run      # no GPU: tiny sizes on the CPU, saying what it skipped

Rows still waiting when ``--budget-s`` runs out are reported as skipped, not run.
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import dataclass
from pathlib import Path

import torch

import transeg
from transeg.analysis.bench import bench_inference, bench_train_step

PAPER_V100_FPS = {"segformer-b0": 15.2, "segformer-b5": 2.5}  # SegFormer Table 2, Cityscapes 1024x2048
GOAL = 3.0  # times the paper's V100 figure
CITYSCAPES_CLASSES = 19


@dataclass(frozen=True)
class Row:
    model: str
    task: str  # "inference" or "train"
    precision: str
    backend: str
    channels_last: bool = True  # the weights' layout on the GPU (what optimize_for_inference uses)


def planned_rows() -> list[Row]:
    """Eager first (cheap), then compile (which compiles for tens of seconds per model and precision)."""
    rows = [Row(m, "inference", p, "eager") for m in PAPER_V100_FPS for p in ("fp32", "bf16", "fp16")]
    rows += [Row(m, "inference", "fp16", "eager", channels_last=False) for m in PAPER_V100_FPS]  # does it help?
    rows += [Row("segformer-b0", "train", p, "eager", channels_last=False) for p in ("fp32", "bf16")]
    rows += [Row(m, "inference", p, "compile") for m in PAPER_V100_FPS for p in ("fp16", "fp32")]
    return rows


def why_skipped(row: Row, dry_run: bool) -> str | None:
    """The reason ``row`` does not run on this machine, or None."""
    if dry_run and row.model != "segformer-b0":
        return "the dry run checks the script with B0 only"
    if dry_run and row.precision == "fp16":
        return "fp16 autocast needs a GPU"
    if dry_run and row.precision == "bf16":
        return "bf16 on a CPU without AMX takes seconds per row; the fp32 rows exercise the script"
    if dry_run and row.backend == "compile":
        return "torch.compile on the CPU compiles C++ kernels for minutes"
    return None


def run_row(row: Row, size: tuple[int, int], train_size: tuple[int, int], device: str, repeats: int) -> dict:
    model = transeg.create_model(row.model, num_classes=CITYSCAPES_CLASSES)
    if row.task == "train":
        result = bench_train_step(model, train_size, 2, row.precision, 2, repeats, device, row.backend)
    else:
        warmup = 3 if row.backend == "compile" else 2  # compile: the first call compiles
        result = bench_inference(model, size, 1, row.backend, row.precision, warmup, repeats, device,
                                 channels_last=row.channels_last and device == "cuda")
    out = {**result.to_dict(), "channels_last": row.channels_last and device == "cuda"}
    if row.task == "inference" and device == "cuda":  # a CPU figure says nothing against a V100's
        paper = PAPER_V100_FPS[row.model]
        out.update(paper_v100_fps=paper, times_paper=round(result.images_per_s / paper, 2),
                   meets_goal=result.images_per_s >= GOAL * paper)
    return out


def table(results: list[dict]) -> str:
    lines = ["| model | task | backend | precision | layout | size | images/s | V100 (paper) | x paper | goal 3x |",
             "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for r in results:
        layout = "channels-last" if r.get("channels_last") else "contiguous"
        if "skipped" in r:
            lines.append(f"| {r['model']} | {r['task']} | {r['backend']} | {r['precision']} | {layout} | | skipped: "
                         f"{r['skipped']} | | | |")
            continue
        paper = r.get("paper_v100_fps")
        lines.append(f"| {r['model']} | {r['task']} | {r['backend']} | {r['precision']} | {layout} | {r['size'][0]}x"
                     f"{r['size'][1]} | {r['images_per_s']:.2f} | {paper or ''} | {r.get('times_paper', '')} | "
                     f"{'' if paper is None else ('yes' if r['meets_goal'] else 'no')} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dry-run", action="store_true", help="Tiny sizes on the CPU (implied without a GPU).")
    parser.add_argument("--out", type=Path, default=None, help="Write the results as JSON.")
    parser.add_argument("--budget-s", type=float, default=300.0, help="Stop starting rows after this long.")
    parser.add_argument("--repeats", type=int, default=10)
    args = parser.parse_args()
    dry_run = args.dry_run or not torch.cuda.is_available()
    device = "cpu" if dry_run else "cuda"
    size, train_size, repeats = ((64, 128), (64, 64), 1) if dry_run else ((1024, 2048), (1024, 1024), args.repeats)
    if dry_run:
        print(f"DRY RUN ({'asked' if args.dry_run else 'no CUDA GPU'}): {size[0]}x{size[1]} on the CPU, "
              f"{repeats} repeat; the figures below are not GPU figures")
    else:
        print(f"GPU: {torch.cuda.get_device_name(0)}, torch {torch.__version__}, CUDA {torch.version.cuda}")
    start, results = time.perf_counter(), []
    for row in planned_rows():
        reason = why_skipped(row, dry_run)
        if reason is None and time.perf_counter() - start > args.budget_s:
            reason = f"the {args.budget_s:.0f} s budget ran out"
        if reason is not None:
            print(f"skipped {row.model} {row.task} {row.backend} {row.precision}"
                  f"{'' if row.channels_last else ' contiguous'}: {reason}")
            results.append({**row.__dict__, "skipped": reason})
            continue
        results.append(run_row(row, size, train_size, device, repeats))
        r = results[-1]
        print(f"{row.model} {row.task} {row.backend} {row.precision}: {r['images_per_s']:.2f} images/s "
              f"(median {r['latency_ms_median']:.1f} ms, peak {r['peak_memory_mb']:.0f} MB)", flush=True)
        if device == "cuda":
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats()
    print()
    print(table(results))
    if args.out is not None:
        report = {"dry_run": dry_run, "device": device, "torch": torch.__version__, "results": results}
        args.out.write_text(json.dumps(report, indent=2))
        print(f"\nwrote {args.out}")


if __name__ == "__main__":
    main()
