"""Which loss helps CamVid's thin classes? segformer-b0 from random initialisation, one run per loss
setting at an equal wall-clock budget, each evaluated on val: mIoU and per-class IoU in one table.

Settings (``--losses`` picks some): plain cross-entropy; cross-entropy with ``class_weight: auto``
(1 / ln(1.02 + class share) of the training split); focal (gamma 2); cross-entropy + Dice; cross-entropy
+ Lovász-softmax; OHEM cross-entropy (MMSegmentation's semantics: thresh 0.7, min_kept 32768 pixels per
image, 19 % of a 360x480 frame as MMSegmentation's 100000 is of a 512x1024 Cityscapes crop). Every run
uses the same recipe (``--config``, by default the CamVid CPU one), seed and budget: its schedule is
sized from a short calibration of that loss so that the poly decay ends with ``--minutes``. Runs go
``--parallel`` at a time, ``--threads`` each. The thin classes (pole, sign, pedestrian, bicyclist) are
marked in the table, which is printed and written to ``--out`` as ``loss_study.json`` and
``loss_study.md``.

    python benchmarks/loss_study.py --minutes 30 --threads 1 --parallel 2
    python benchmarks/loss_study.py --minutes 0.1 --losses ce ce-auto   # a smoke run
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import torch
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.timing import median_step_seconds
from transeg.engine.evaluate import evaluate
from transeg.engine.recipe import TrainConfig, build_dataset_from_config, load_config, parse_config
from transeg.engine.train import Trainer

ROOT = Path(__file__).resolve().parents[1]
CAMVID = ROOT.parent / "shared" / "data" / "camvid"
RECIPE = ROOT / "configs/segformer/segformer-b0-camvid-cpu.yaml"
SETTINGS: dict[str, list[dict[str, Any]]] = {
    "ce": [{"type": "cross_entropy"}],
    "ce-auto": [{"type": "cross_entropy", "class_weight": "auto"}],
    "focal": [{"type": "focal", "gamma": 2.0}],
    "ce+dice": [{"type": "cross_entropy"}, {"type": "dice"}],
    "ce+lovasz": [{"type": "cross_entropy"}, {"type": "lovasz"}],
    "ohem": [{"type": "ohem_cross_entropy", "thresh": 0.7, "min_kept": 32768}],
}
THIN = ("pole", "sign", "pedestrian", "bicyclist")  # CamVid's Pole, SignSymbol, Pedestrian, Bicyclist


def is_thin(name: str) -> bool:
    return any(name.lower().startswith(t) for t in THIN)


def study_config(config: Path, data_root: Path, loss: str, out_dir: Path, iterations: int,
                 minutes: float) -> TrainConfig:
    """The recipe with ``loss``'s terms, its schedule sized to ``iterations``, a hard ``minutes`` limit,
    no evaluation or checkpoint while training."""
    data = load_config(config).model_dump(mode="json")
    data["loss"] = SETTINGS[loss]
    data["output_dir"] = str(out_dir)
    data["data"].update(root=str(data_root), val_split=None)
    data["schedule"].update(iterations=iterations, warmup_iters=min(data["schedule"]["warmup_iters"], iterations // 10))
    data["train"].update(time_limit_minutes=minutes, checkpoint_interval=10**9, log_interval=10)
    return parse_config(data, str(config))


def seconds_per_iteration(config: Path, data_root: Path, loss: str, out_dir: Path) -> float:
    """Median time of 10 training iterations of ``loss`` after 6 of warm-up, to size the schedule."""
    return median_step_seconds(Trainer(study_config(config, data_root, loss, out_dir, 16, 10.0)), warmup=6)


def run(loss: str, config: Path, data_root: Path, minutes: float, threads: int, out: Path) -> dict[str, Any]:
    """Calibrate, train for ``minutes`` and evaluate on the config's val split; the report is also
    written to ``out/<loss>.json``."""
    torch.set_num_threads(threads)
    per_iteration = seconds_per_iteration(config, data_root, loss, out / f"{loss}-calibration")
    iterations = max(10, int(minutes * 60 / per_iteration))
    cfg = study_config(config, data_root, loss, out / loss, iterations, minutes)
    trainer = Trainer(cfg)
    started = time.monotonic()
    result = trainer.fit(show_progress=False)
    seconds = time.monotonic() - started
    val = build_dataset_from_config(cfg.data, load_config(config).data.val_split or "val")
    metrics, _ = evaluate(trainer.result_model, val, cfg.eval, show_progress=False)
    report = {"loss": loss, "terms": SETTINGS[loss], "iterations": result.iteration, "planned_iterations": iterations,
              "train_minutes": round(seconds / 60, 2), "mIoU": metrics.mIoU,
              "per_class_iou": dict(zip(metrics.class_names, metrics.iou, strict=True))}
    (out / f"{loss}.json").write_text(json.dumps(report, indent=2))
    return report


def _pct(value: float) -> str:
    return "n/a" if value != value else f"{value * 100:.1f}"


def markdown(reports: list[dict[str, Any]], header: str) -> str:
    """The table: one row per loss, mIoU then per-class IoU (%), thin classes in bold and marked *."""
    names = list(reports[0]["per_class_iou"])
    heads = [f"**{n}** *" if is_thin(n) else n for n in names]
    lines = [header, "", "| loss | iterations | mIoU | " + " | ".join(heads) + " |",
             "| --- | ---: | ---: |" + " ---: |" * len(names)]
    for r in reports:
        cells = [f"**{_pct(r['per_class_iou'][n])}**" if is_thin(n) else _pct(r["per_class_iou"][n]) for n in names]
        lines.append(f"| {r['loss']} | {r['iterations']} | {_pct(r['mIoU'])} | " + " | ".join(cells) + " |")
    return "\n".join([*lines, "", "\\* thin classes"]) + "\n"


def show(reports: list[dict[str, Any]], header: str) -> None:
    """Print the table with the thin classes' columns highlighted."""
    table = Table(title=header)
    names = list(reports[0]["per_class_iou"])
    for head in ("loss", "iterations", "mIoU"):
        table.add_column(head, justify="left" if head == "loss" else "right")
    for name in names:
        table.add_column(f"{name} *" if is_thin(name) else name, justify="right",
                         style="bold yellow" if is_thin(name) else None)
    for r in reports:
        table.add_row(r["loss"], str(r["iterations"]), _pct(r["mIoU"]),
                      *(_pct(r["per_class_iou"][n]) for n in names))
    Console().print(table)


def main(argv: list[str] | None = None) -> list[dict[str, Any]]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--minutes", type=float, default=30.0, help="training budget of every run")
    parser.add_argument("--threads", type=int, default=1, help="torch threads per run")
    parser.add_argument("--parallel", type=int, default=1, help="runs at a time")
    parser.add_argument("--losses", nargs="+", choices=list(SETTINGS), default=list(SETTINGS))
    parser.add_argument("--config", type=Path, default=RECIPE, help="training recipe (its data, model, schedule)")
    parser.add_argument("--data-root", type=Path, default=CAMVID)
    parser.add_argument("--out", type=Path, default=Path("runs/loss_study"))
    args = parser.parse_args(argv)
    if args.minutes <= 0 or args.threads < 1 or args.parallel < 1:
        parser.error("--minutes, --threads and --parallel must be positive")
    if not args.data_root.is_dir():
        raise SystemExit(f"{args.data_root}: no such dataset folder (CamVid: see ../shared/data/README.md)")
    args.out.mkdir(parents=True, exist_ok=True)
    jobs = [(loss, args.config, args.data_root, args.minutes, args.threads, args.out) for loss in args.losses]
    columns = (TextColumn("loss study"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    # an executor's workers are not daemons, so each run's data loader may start its own workers
    with ProcessPoolExecutor(args.parallel, mp_context=multiprocessing.get_context("spawn"),
                             max_tasks_per_child=1) as pool, Progress(*columns) as progress:
        task = progress.add_task("runs", total=len(jobs))
        pending = [pool.submit(run, *job) for job in jobs]
        for future in pending:
            future.add_done_callback(lambda _: progress.advance(task))
        reports = [future.result() for future in pending]
    header = (f"{load_config(args.config).model.name} from random initialisation, {args.minutes:g} min of "
              f"training per loss, {args.threads} thread(s) each, {args.parallel} at a time: val IoU (%)")
    show(reports, header)
    (args.out / "loss_study.json").write_text(json.dumps(
        {"minutes": args.minutes, "threads": args.threads, "parallel": args.parallel, "runs": reports}, indent=2))
    (args.out / "loss_study.md").write_text(markdown(reports, header))
    return reports


if __name__ == "__main__":
    main()
