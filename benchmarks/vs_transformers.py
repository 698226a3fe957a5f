"""transeg vs transformers' SegformerForSemanticSegmentation on the same weights, side by side.

Inference (B0 and B2 at 512x512 and 1024x1024, batch 1 and 4; transformers eager and, where
onnxruntime is installed, exported to ONNX Runtime) and a training step at batch 2 (512x512).
Every row gives the ratio (transformers time / transeg time) and the max abs difference of the
outputs. Peak training memory is measured in fresh processes (peak resident set of each).

    python benchmarks/vs_transformers.py [--threads 2] [--quick]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import transeg
from tests.conftest import hf_segformer
from transeg.analysis.bench import _time
from transeg.engine.losses import segmentation_loss


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


def train_step_time(impl: str, variant: str, batch: int, repeats: int) -> dict:
    hf, ours = models(variant)
    model = hf if impl == "transformers" else ours
    model.train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-6)
    gen = torch.Generator().manual_seed(0)
    x, y = torch.randn(batch, 3, 512, 512, generator=gen), torch.randint(0, 150, (batch, 512, 512), generator=gen)
    forward = (lambda: hf(pixel_values=x).logits) if impl == "transformers" else (lambda: ours.forward_train(x).logits)

    def step() -> None:
        optimizer.zero_grad(set_to_none=True)
        segmentation_loss(forward(), y).backward()
        optimizer.step()

    t = sorted(_time(step, torch.device("cpu"), 1, repeats))[repeats // 2]
    return {"ms": t * 1e3, "peak_rss_mb": peak_rss_mb()}


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
    parser.add_argument("--train-child", nargs=2, metavar=("IMPL", "VARIANT"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if args.train_child:
        print(json.dumps(train_step_time(*args.train_child, batch=2, repeats=max(3, args.repeats // 2))))
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
    print("\n| training step (batch 2, 512x512) | transformers ms | transeg ms | transeg is × faster |"
          " transformers peak MB | transeg peak MB |")
    print("| --- | --- | --- | --- | --- | --- |")
    for variant in ("b0",) if args.quick else ("b0", "b2"):
        results = {}
        for impl in ("transformers", "transeg"):
            out = subprocess.run([sys.executable, __file__, "--threads", str(args.threads), "--repeats",
                                  str(args.repeats), "--train-child", impl, variant],
                                 check=True, capture_output=True, text=True).stdout
            results[impl] = json.loads(out.strip().splitlines()[-1])
        hf_r, ours_r = results["transformers"], results["transeg"]
        print(f"| B{variant[1]} | {hf_r['ms']:.0f} | {ours_r['ms']:.0f} | {hf_r['ms'] / ours_r['ms']:.2f} |"
              f" {hf_r['peak_rss_mb']:.0f} | {ours_r['peak_rss_mb']:.0f} |")


if __name__ == "__main__":
    main()
