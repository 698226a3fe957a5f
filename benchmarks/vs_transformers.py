"""transeg vs transformers' SegformerForSemanticSegmentation on the same weights, side by side.

Inference (B0 and B2 at 512x512 and 1024x1024, batch 1 and 4; transformers eager and, where
onnxruntime is installed, exported to ONNX Runtime) and a training step at batch 2 (512x512):
both models from the same weights in one process, each with its own loss and an AdamW step, the
steps of transeg interleaved with those of each other side in turn (transformers, transformers in
a retained heap, transeg with the whole-image loss it used before the chunked one) and their
medians compared. transeg steps as its trainer does, with freed memory kept in the heap
(``engine/heap.py``); transformers with glibc's own large-block mappings, and once more in the
same retained heap (``timing.heap_policy``). Every inference row gives the ratio (transformers
time / transeg time) and the max abs difference of the outputs.
``--memory`` adds each training side's peak resident set, measured in fresh processes.

    OMP_WAIT_POLICY=PASSIVE python benchmarks/vs_transformers.py [--threads 2] [--quick] [--memory]
"""

from __future__ import annotations

import argparse
import copy
import json
import subprocess
import sys
import tempfile
from collections.abc import Callable
from contextlib import AbstractContextManager
from functools import partial
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import transeg
from benchmarks.timing import heap_policy, interleaved_medians
from tests.conftest import hf_segformer
from transeg.analysis.bench import _time
from transeg.engine.heap import retained_heap
from transeg.engine.loss_spec import build_loss
from transeg.engine.optim import build_optimizer
from transeg.engine.recipe import OptimizerSection


def models(variant: str):
    hf = hf_segformer(variant, num_labels=150, seed=0)
    with tempfile.TemporaryDirectory() as directory:
        hf.save_pretrained(directory)
        ours = transeg.load_model(directory)
    return hf.eval(), ours.eval()


class _HFLogits(torch.nn.Module):
    def __init__(self, hf) -> None:
        super().__init__()
        self.hf = hf

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        return self.hf(pixel_values=pixel_values).logits


def onnx_session(model: _HFLogits, example: torch.Tensor, directory: str):
    import onnxruntime as ort

    path = f"{directory}/{id(model)}.onnx"
    torch.onnx.export(model, (example,), path, dynamo=True, opset_version=18,
                      dynamic_shapes={"pixel_values": {0: torch.export.Dim("b", min=1, max=64)}})
    options = ort.SessionOptions()
    options.intra_op_num_threads = torch.get_num_threads()
    session = ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    return lambda x: torch.from_numpy(session.run(None, {name: x.numpy()})[0])


def inference_rows(variant: str, size: int, batch: int, repeats: int, use_onnx: bool) -> list[dict]:
    hf, ours = models(variant)
    x = torch.randn(batch, 3, size, size, generator=torch.Generator().manual_seed(0))
    with torch.inference_mode():
        reference = hf(pixel_values=x).logits
        runs = {"transformers eager": lambda: hf(pixel_values=x).logits, "transeg eager": lambda: ours(x)}
    rows = []
    with tempfile.TemporaryDirectory() as directory:
        if use_onnx:
            example = torch.randn(2, 3, size, size)
            hf_onnx = onnx_session(_HFLogits(hf).eval(), example, directory)
            runs["transformers onnxruntime"] = lambda: hf_onnx(x)
            ours_onnx = transeg.optimize_for_inference(ours, "onnx")  # dynamic batch, height and width
            runs["transeg onnxruntime"] = lambda: ours_onnx(x)
        times, diffs = {}, {}
        for name, run in runs.items():
            with torch.inference_mode():
                diffs[name] = (run() - reference).abs().max().item()
                times[name] = sorted(_time(run, torch.device("cpu"), 1, repeats))[repeats // 2]
    for name, t in times.items():
        rows.append({"case": f"B{variant[1]} infer {size}x{size} b{batch}", "impl": name, "ms": t * 1e3,
                     "vs_transformers_eager": times["transformers eager"] / t, "max_abs_diff": diffs[name]})
    return rows


def whole_image_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """The cross-entropy transeg used before the chunked one: the logits upsampled whole
    (channels-last, so that the softmax runs over contiguous class vectors)."""
    logits = logits.float().contiguous(memory_format=torch.channels_last)
    logits = F.interpolate(logits, size=labels.shape[-2:], mode="bilinear", align_corners=False)
    flat = logits.permute(0, 2, 3, 1).reshape(-1, logits.shape[1])
    return F.cross_entropy(flat, labels.reshape(-1), ignore_index=255)


TRAIN_SIDES = ("transformers", "transeg", "transeg, whole-image loss", "transformers, retained heap")


def train_steps(variant: str, batch: int) -> dict[str, Callable[[], float] | float]:
    """One AdamW training step per side on the same weights and batch, each with its own loss and
    optimizer: transformers' model computes its own loss (``labels=``) and steps PyTorch's fused AdamW
    (its Trainer's default optimizer with torch >= 2.8), transeg its default :func:`build_loss` and
    the AdamW of its trainer (:func:`build_optimizer`, fused as well, with the SegFormer parameter
    groups); and each side's loss in eval mode (``<name> eval loss``)."""
    hf, ours = models(variant)
    plain, hf_retained = copy.deepcopy(ours), copy.deepcopy(hf)
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(batch, 3, 512, 512, generator=gen)
    y = torch.randint(0, 150, (batch, 512, 512), generator=gen)
    loss = build_loss()
    losses = {
        "transformers": (hf, lambda: hf(pixel_values=x, labels=y).loss),
        "transeg": (ours, lambda: loss(ours.forward_train(x), y)),
        "transeg, whole-image loss": (plain, lambda: whole_image_loss(plain.forward_train(x).logits, y)),
        "transformers, retained heap": (hf_retained, lambda: hf_retained(pixel_values=x, labels=y).loss),
    }
    steps = {}
    for name, (model, forward) in losses.items():
        with torch.no_grad():
            model.eval()
            steps[f"{name} eval loss"] = forward().item()  # no dropout: the same weights give the same loss
        model.train()
        is_transformers = name.startswith("transformers")
        optimizer = (torch.optim.AdamW(model.parameters(), lr=1e-6, fused=True) if is_transformers
                     else build_optimizer(model, OptimizerSection(lr=1e-6)))

        def step(forward=forward, optimizer=optimizer) -> float:
            optimizer.zero_grad(set_to_none=True)
            value = forward()
            value.backward()
            optimizer.step()
            return value.item()

        steps[name] = step
    return steps


def heap_settings() -> dict[str, Callable[[], AbstractContextManager]]:
    """Each side's heap (:func:`benchmarks.timing.heap_policy`): retained as transeg's trainer keeps
    it, but for plain transformers."""
    return {name: partial(heap_policy, name != "transformers") for name in TRAIN_SIDES}


def train_rows(variant: str, batch: int, repeats: int) -> list[dict[str, Any]]:
    """One contest per other side against transeg, ``repeats`` interleaved steps each after a
    warm-up (two sides at a time, so that no third one's memory sits between theirs in the heap):
    the median seconds of both and each side's eval-mode loss."""
    steps = train_steps(variant, batch)
    loss = {name: steps.pop(f"{name} eval loss") for name in TRAIN_SIDES}
    settings = heap_settings()
    rows = []
    for other in TRAIN_SIDES:
        if other == "transeg":
            continue
        pair = {name: steps[name] for name in (other, "transeg")}
        with retained_heap():  # glibc's defaults again afterwards
            medians = interleaved_medians(pair, repeats, settings=settings)
        rows.append({"against": other, "their_s": medians[other], "transeg_s": medians["transeg"],
                     "their_loss": loss[other], "transeg_loss": loss["transeg"]})
    return rows


def train_child_peak(impl: str, variant: str, batch: int) -> dict:
    """Two steps of one side in this (fresh) process: its peak resident set."""
    steps = train_steps(variant, batch)
    with retained_heap(), heap_settings()[impl]():
        for _ in range(2):
            steps[impl]()
    return {"peak_rss_mb": peak_rss_mb()}


def peak_rss_mb() -> float:
    """This process's peak resident set (VmHWM: unlike ru_maxrss, not inherited from the parent)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--quick", action="store_true", help="B0 at 512 only")
    parser.add_argument("--skip-inference", action="store_true", help="the training rows only")
    parser.add_argument("--memory", action="store_true", help="also each training side's peak RSS (fresh processes)")
    parser.add_argument("--train-child", nargs=2, metavar=("IMPL", "VARIANT"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if args.train_child:
        print(json.dumps(train_child_peak(*args.train_child, batch=2)))
        return
    try:
        import onnxruntime  # noqa: F401

        use_onnx = True
    except ImportError:
        use_onnx = False
    cases = [("b0", 512, 1)] if args.quick else [
        (v, s, b) for v in ("b0", "b2") for s in (512, 1024) for b in (1, 4)]
    print(f"torch {torch.__version__}, {args.threads} threads, fp32, median of {args.repeats}\n")
    print("| case | implementation | ms | × faster than transformers eager | max abs diff vs transformers eager |")
    print("| --- | --- | --- | --- | --- |")
    for variant, size, batch in [] if args.skip_inference else cases:
        for row in inference_rows(variant, size, batch, args.repeats, use_onnx and batch == 1):
            print(f"| {row['case']} | {row['impl']} | {row['ms']:.1f} | {row['vs_transformers_eager']:.2f} |"
                  f" {row['max_abs_diff']:.1e} |")
    print(f"\n| training step (batch 2, 512x512, AdamW, median of {args.repeats} interleaved) | against | its ms |"
          " transeg ms | transeg is × faster | its eval loss | transeg eval loss |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for variant in ("b0",) if args.quick else ("b0", "b2"):
        for row in train_rows(variant, 2, args.repeats):
            print(f"| B{variant[1]} | {row['against']} | {row['their_s'] * 1e3:.0f} | {row['transeg_s'] * 1e3:.0f} |"
                  f" {row['their_s'] / row['transeg_s']:.2f} | {row['their_loss']:.5f} | {row['transeg_loss']:.5f} |",
                  flush=True)
    if args.memory:
        print("\n| peak RSS, 2 training steps in a fresh process | " + " | ".join(TRAIN_SIDES) + " |")
        print("| --- |" + " --- |" * len(TRAIN_SIDES))
        for variant in ("b0",) if args.quick else ("b0", "b2"):
            peaks = []
            for impl in TRAIN_SIDES:
                out = subprocess.run([sys.executable, __file__, "--threads", str(args.threads), "--train-child", impl,
                                      variant], check=True, capture_output=True, text=True).stdout
                peaks.append(f"{json.loads(out.strip().splitlines()[-1])['peak_rss_mb']:.0f} MB")
            print(f"| B{variant[1]} | " + " | ".join(peaks) + " |")


if __name__ == "__main__":
    main()
