"""Static INT8 quantisation of an exported ONNX model with ONNX Runtime's quantiser.

QDQ format, weights int8 per output channel, activations uint8 (the u8 x s8 products that VNNI runs),
ranges calibrated (min/max) on images preprocessed as ``transeg predict`` does. Only the operators
in ``QUANTIZED_OPS`` that multiply by weights are quantised, and the last ``keep_float_last`` of them
(the classifier) stay float: LayerNorm, Softmax, GELU, attention's two products, the residual
additions and the resizes keep float inputs and outputs. The choice is a
measurement on CamVid (``benchmarks/int8.py``, docs/deploy.md).
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np

from transeg.data.images import read_image
from transeg.errors import TransegError
from transeg.inference.modes import normalize
from transeg.weights.files import write_atomic

QUANTIZED_OPS = ("Conv", "MatMul", "Gemm")
KEEP_FLOAT_LAST = 1  # the classifier: its logits decide the argmax
# The operators whose outputs stay float (no requantisation), per runtime the file is made for.
# ONNX Runtime: weight MatMuls run as MatMulIntegerToFloat (1.20x vs 1.07x over fp32 for B0), while Convs
# need their quantised output to fuse into QLinearConv (0.87x without). OpenVINO: Convs with float outputs
# too (1.3-1.6x faster than with requantised ones for B0 at 512x512). CamVid mIoU unchanged, docs/deploy.md.
FLOAT_OUTPUTS: dict[str, list[str]] = {"onnxruntime": ["MatMul"], "openvino": ["MatMul", "Conv"]}


def onnx_metadata(path: str | os.PathLike[str]) -> dict[str, str]:
    """An ONNX file's ``metadata_props`` as a dict (without loading its weights)."""
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    return {prop.key: prop.value for prop in model.metadata_props}


def _calibration_inputs(paths: Sequence[Path], mean: Sequence[float], std: Sequence[float],
                        uint8_input: bool) -> Iterator[np.ndarray]:
    """Each image as the graph takes it: (1, H, W, 3) uint8, or (1, 3, H, W) normalised float32."""
    for path in paths:
        image = read_image(path)
        yield image[None] if uint8_input else normalize(image, mean, std).numpy()


def _reader(paths: Sequence[Path], input_name: str, mean: Sequence[float], std: Sequence[float],
            uint8_input: bool):
    from onnxruntime.quantization import CalibrationDataReader

    class ImageReader(CalibrationDataReader):
        """Feeds the calibration images one at a time."""

        def __init__(self) -> None:
            self.inputs = _calibration_inputs(paths, mean, std, uint8_input)

        def get_next(self) -> dict[str, np.ndarray] | None:
            x = next(self.inputs, None)
            return None if x is None else {input_name: x}

    return ImageReader()


def weight_nodes(model, op_types: Sequence[str]) -> list[str]:
    """The names of ``model``'s nodes of ``op_types`` that multiply by a weight (their second input is an
    initializer), in graph (topological) order: not attention's activation x activation products, whose
    quantisation also quantises the Softmax between them (ONNX Runtime fuses it to a slow QLinearSoftmax)."""
    weights = {init.name for init in model.graph.initializer}
    return [node.name for node in model.graph.node
            if node.op_type in op_types and len(node.input) > 1 and node.input[1] in weights]


def quantize_int8(fp32_path: str | os.PathLike[str], out: str | os.PathLike[str], calib: Sequence[Path],
                  op_types: Sequence[str] = QUANTIZED_OPS, keep_float_last: int = KEEP_FLOAT_LAST,
                  runtime: str = "onnxruntime") -> Path:
    """Write the static INT8 (QDQ) form of the transeg ONNX file ``fp32_path`` to ``out``, calibrated on
    the images ``calib``, laid out for ``runtime`` (``FLOAT_OUTPUTS``; any runtime reads either); the
    metadata is the fp32 file's plus ``quantization`` (JSON: what was quantised, and for which runtime).
    The graph's input (uint8 images, or normalised float32) is fed as the graph expects it."""
    if runtime not in FLOAT_OUTPUTS:
        raise TransegError(f"unknown INT8 runtime {runtime!r} (known: {', '.join(FLOAT_OUTPUTS)})")
    if not calib:
        raise TransegError("INT8 quantisation needs calibration images (--calib)")
    metadata = onnx_metadata(fp32_path)
    if "mean" not in metadata:
        raise TransegError(f"{fp32_path}: not a transeg ONNX export (no mean/std in its metadata)")
    out = Path(out)
    root_logger = logging.getLogger()  # the quantiser warns through it about every 1-D LayerNorm weight
    level = root_logger.level
    root_logger.setLevel(logging.ERROR)
    try:
        return _quantize(Path(fp32_path), out, calib, op_types, keep_float_last, metadata, runtime)
    finally:
        root_logger.setLevel(level)


def _quantize(fp32_path: Path, out: Path, calib: Sequence[Path], op_types: Sequence[str], keep_float_last: int,
              metadata: dict[str, str], runtime: str) -> Path:
    import onnx
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    mean, std = json.loads(metadata["mean"]), json.loads(metadata["std"])
    with tempfile.TemporaryDirectory() as tmp:
        prepared = Path(tmp) / "prepared.onnx"
        quant_pre_process(str(fp32_path), str(prepared), skip_symbolic_shape=True)
        graph = onnx.load(str(prepared))
        uint8_input = graph.graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.UINT8
        nodes = weight_nodes(graph, op_types)
        kept = nodes[len(nodes) - keep_float_last:] if keep_float_last > 0 else []
        if len(kept) == len(nodes):
            raise TransegError(f"{fp32_path}: no {'/'.join(op_types)} node with weights left to quantise")
        reader = _reader(calib, graph.graph.input[0].name, mean, std, uint8_input)
        quantized = Path(tmp) / "int8.onnx"
        quantize_static(str(prepared), str(quantized), reader, quant_format=QuantFormat.QDQ,
                        op_types_to_quantize=list(op_types), nodes_to_quantize=nodes[:len(nodes) - len(kept)],
                        per_channel=True,
                        activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8, nodes_to_exclude=kept,
                        calibrate_method=CalibrationMethod.MinMax,
                        extra_options={"OpTypesToExcludeOutputQuantization": FLOAT_OUTPUTS[runtime]})
        result = onnx.load(str(quantized))
        info = {"format": "QDQ", "weights": "int8 per channel", "activations": "uint8 per tensor",
                "ops": list(op_types), "kept_float": kept, "float_outputs": FLOAT_OUTPUTS[runtime],
                "runtime": runtime, "calibration_images": len(calib)}
        onnx.helper.set_model_props(result, {**metadata, "quantization": json.dumps(info)})
        write_atomic(out, lambda tmp_path: onnx.save(result, tmp_path))
    return out
