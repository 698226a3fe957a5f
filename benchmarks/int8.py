"""INT8 against fp32, ONNX Runtime against OpenVINO: segformer-b0 and b2 at 512x512, batch 1.

For each model: transeg's fp32 ONNX export and its INT8 form (``transeg export --int8``: QDQ,
calibrated on CamVid train frames, or generated scenes without CamVid), each run by ONNX Runtime and by
OpenVINO (which reads the QDQ graph as its own INT8; compiled for the dynamic-shape graph and, as
``Int8Segmentor`` runs it, for the input's fixed shape), interleaved round by round so that all six see
the same machine; medians, and speed-ups over ONNX Runtime fp32. With ``--checkpoint`` (a CamVid-trained
B0) the b0 row uses it, and its INT8 label agreement with fp32 and mIoU change on CamVid val are
reported.

    python benchmarks/int8.py --threads 2 --rounds 20
    python benchmarks/int8.py --checkpoint /path/camvid-b0/model.safetensors --models segformer-b0
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import transeg
from benchmarks.timing import interleaved_medians
from transeg.data.datasets import build_dataset
from transeg.engine.quant_eval import compare_int8, onnx_labeler
from transeg.inference.backends import Int8Segmentor, OpenVinoStatic
from transeg.inference.export import export_onnx
from transeg.inference.modes import Predictor
from transeg.inference.quantize import quantize_int8

Run = Callable[[np.ndarray], object]
CAMVID = Path(__file__).resolve().parents[2] / "shared" / "data" / "camvid"


def calibration_images(folder: Path, count: int) -> list[Path]:
    """``count`` CamVid train frames spread over the split, or generated scenes when CamVid is absent."""
    if (CAMVID / "images" / "train").is_dir():
        frames = sorted((CAMVID / "images" / "train").iterdir())
        return frames[:: max(1, len(frames) // count)][:count]
    rng = np.random.default_rng(0)
    paths = []
    for i in range(count):
        image = np.repeat(np.repeat(rng.integers(0, 256, (12, 16, 3), dtype=np.uint8), 30, 0), 30, 1)
        paths.append(folder / f"calib{i}.png")
        Image.fromarray(image).save(paths[-1])
    return paths


def runners(fp32: Path, int8: dict[str, Path], threads: int) -> dict[str, Run]:
    """name -> a call running the (1, 3, H, W) float32 input once."""
    import onnxruntime as ort
    import openvino as ov

    out = {}
    for label, path in (("ORT fp32", fp32), ("ORT INT8", int8["onnxruntime"])):
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        out[label] = lambda x, s=session: s.run(None, {"image": x})
    core = ov.Core()
    for label, path in (("OV fp32 dynamic", fp32), ("OV INT8 dynamic", int8["openvino"])):
        compiled = core.compile_model(core.read_model(str(path)), "CPU", {
            "INFERENCE_NUM_THREADS": threads, "PERFORMANCE_HINT": "LATENCY", "INFERENCE_PRECISION_HINT": "f32"})
        request = compiled.create_infer_request()
        out[label] = lambda x, r=request: r.infer([x])
    for label, path in (("OV fp32 static", fp32), ("OV INT8 static", int8["openvino"])):
        out[label] = OpenVinoStatic(path, threads)  # as Int8Segmentor runs it
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=["segformer-b0", "segformer-b2"])
    parser.add_argument("--size", type=int, nargs=2, default=(512, 512))
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--calib", type=int, default=16, help="Calibration images.")
    parser.add_argument("--checkpoint", type=Path, default=None, help="A CamVid-trained segformer-b0.")
    args = parser.parse_args()
    x = np.random.default_rng(0).standard_normal((1, 3, *args.size)).astype(np.float32)
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        calib = calibration_images(folder, args.calib)
        for name in args.models:
            trained = args.checkpoint is not None and name == "segformer-b0"
            model = transeg.load_model(str(args.checkpoint)) if trained else transeg.create_model(name, 11)
            fp32 = folder / f"{name}.onnx"
            int8 = {runtime: folder / f"{name}-int8-{runtime}.onnx" for runtime in ("onnxruntime", "openvino")}
            start = time.perf_counter()
            export_onnx(model, fp32)
            for runtime, path in int8.items():  # each runtime's own layout (quantize.FLOAT_OUTPUTS)
                quantize_int8(fp32, path, calib, runtime=runtime)
            print(f"{name}: exported and quantised in {time.perf_counter() - start:.0f} s", flush=True)
            calls = runners(fp32, int8, args.threads)
            ms = {label: seconds * 1e3 for label, seconds in
                  interleaved_medians({label: partial(call, x) for label, call in calls.items()}, args.rounds,
                                      warmup=3).items()}
            base = ms["ORT fp32"]
            print(f"\n{name} {args.size[0]}x{args.size[1]}, batch 1, {args.threads} threads, median of "
                  f"{args.rounds} interleaved rounds")
            print(f"  {'runtime':<17} {'ms':>8} {'vs ORT fp32':>12}")
            for label, value in ms.items():
                print(f"  {label:<17} {value:8.1f} {base / value:11.2f}x")
            if trained and (CAMVID / "images" / "val").is_dir():
                reference = onnx_labeler(fp32, threads=args.threads)
                for runtime, path in int8.items():
                    int8_labels = Predictor(Int8Segmentor(path, args.threads, runtime)).predict
                    report = compare_int8(reference, int8_labels, build_dataset("camvid", CAMVID, "val"))
                    print(f"  CamVid val ({report.images} images), INT8 in {runtime} vs ORT fp32: label agreement "
                          f"{report.agreement * 100:.2f}%, mIoU {report.miou_fp32:.2f} -> {report.miou_int8:.2f} "
                          f"(drop {report.drop:.2f} points)", flush=True)
            print(flush=True)


if __name__ == "__main__":
    main()
