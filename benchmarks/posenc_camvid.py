"""SegFormer Table 1c on CamVid, on the CPU: Mix-FFN against positional encoding (PE).

Trains the two arms of ``configs/analysis/`` from random initialisation for ``--minutes`` each, side
by side (``--threads`` each, so that both see the same machine), with the budgeted schedule of
``benchmarks/camvid_cpu.py`` (sized from a short calibration so that it ends with the budget), then
evaluates each on the CamVid val frames at two test resolutions: 240x320, the training input size
(the PE table as learned, the paper's "768x768 sliding" row), and 360x480, the full frames (the table
interpolated, the paper's "1024x2048 whole" row). Prints a Table 1c-style Markdown table and writes
``<arm>.json`` and ``table1c.md`` under ``--out``.

    python benchmarks/posenc_camvid.py --minutes 60
    python benchmarks/posenc_camvid.py --minutes 0.5 --val-limit 4 --out /tmp/posenc_smoke   # smoke test
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.camvid_cpu import CAMVID, run_config, seconds_per_iteration, trainer_for
from transeg.data.datasets import build_dataset
from transeg.engine.evaluate import evaluate

CONFIGS = Path(__file__).resolve().parents[1] / "configs" / "analysis"
ARMS = (("PE", CONFIGS / "segformer-b0-camvid-pe.yaml"), ("Mix-FFN", CONFIGS / "segformer-b0-camvid-mixffn.yaml"))
# (data.test_scale: the (long, short) edges to fit, the H x W a 360x480 CamVid frame becomes)
TEST_SCALES = (((320, 240), "240x320"), ((480, 360), "360x480"))


def slug(arm: str) -> str:
    return arm.lower().replace("-", "")


def run_arm(arm: str, config: Path, args: argparse.Namespace) -> None:
    """Train one arm for the budget, evaluate it at every test scale, write ``<arm>.json``."""
    torch.set_num_threads(args.threads)
    label = slug(arm)
    per_iteration = seconds_per_iteration("transeg", config, args.out / f"{label}-calibration", args.workers)
    iterations = max(10, int(args.minutes * 60 / per_iteration))
    cfg = run_config(config, args.out / label, iterations, args.minutes, args.workers)
    trainer = trainer_for("transeg", cfg)
    started = time.monotonic()
    result = trainer.fit(show_progress=False)
    train_seconds = time.monotonic() - started
    val = build_dataset("camvid", CAMVID, "val")
    if args.val_limit:
        val.samples = val.samples[: args.val_limit]
    scores = {}
    for scale, name in TEST_SCALES:
        metrics, _ = evaluate(trainer.result_model, val, cfg.eval, scale, cfg.data.size_divisor, show_progress=False)
        scores[name] = {"test_scale": list(scale), "mIoU": metrics.mIoU, "aAcc": metrics.aAcc}
    report = {"arm": arm, "model": cfg.model.name, "config": str(config), "iterations": result.iteration,
              "planned_iterations": iterations, "train_minutes": round(train_seconds / 60, 1),
              "train_images_per_s": round(result.iteration * cfg.train.batch_size / train_seconds, 2),
              "val_images": len(val), "scores": scores}
    (args.out / f"{label}.json").write_text(json.dumps(report, indent=2))


def table(reports: list[dict], minutes: float, threads: int) -> str:
    """Table 1c's layout (inference resolution, encoder type, mIoU), plus each arm's drop from the
    training resolution and its training iterations."""
    lines = [f"CamVid val ({reports[0]['val_images']} frames), segformer-b0 from random initialisation, "
             f"{minutes:g} min of CPU training per arm ({threads} thread(s) each, side by side), "
             "trained on 240x320 crops, whole-frame inference", "",
             "| Inf Res | Enc Type | mIoU | change | iterations |", "| --- | --- | --- | --- | --- |"]
    for report in reports:
        base = None
        for _, name in TEST_SCALES:
            miou = report["scores"][name]["mIoU"] * 100
            change = "" if base is None else f"{miou - base:+.2f}"
            base = miou if base is None else base
            lines.append(f"| {name.replace('x', '×')} | {report['arm']} | {miou:.2f} | {change} | "
                         f"{report['iterations']} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--minutes", type=float, default=60.0, help="training budget of each arm")
    parser.add_argument("--threads", type=int, default=1, help="torch threads per arm")
    parser.add_argument("--workers", type=int, default=1, help="data-loading processes per arm")
    parser.add_argument("--val-limit", type=int, default=None, help="evaluate on the first N val frames only")
    parser.add_argument("--out", type=Path, default=Path("runs/posenc_camvid"))
    args = parser.parse_args()
    if not CAMVID.is_dir():
        raise SystemExit(f"CamVid not found at {CAMVID}; see ../shared/data/README.md")
    if args.minutes <= 0 or (args.val_limit is not None and args.val_limit < 1):
        raise SystemExit("--minutes and --val-limit must be positive")
    args.out.mkdir(parents=True, exist_ok=True)
    context = multiprocessing.get_context("spawn")
    processes = [context.Process(target=run_arm, args=(arm, config, args)) for arm, config in ARMS]
    for process in processes:  # concurrently
        process.start()
    for process in processes:
        process.join()
    failed = [arm for (arm, _), process in zip(ARMS, processes, strict=True) if process.exitcode != 0]
    if failed:
        raise SystemExit(f"the {', '.join(failed)} run(s) failed; see the output above")
    reports = [json.loads((args.out / f"{slug(arm)}.json").read_text()) for arm, _ in ARMS]
    text = table(reports, args.minutes, args.threads)
    (args.out / "table1c.md").write_text(text + "\n")
    print(text)


if __name__ == "__main__":
    main()
