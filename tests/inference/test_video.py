"""Video prediction: the overlay video keeps the frame count and rate, and frame k's labels are those of
predicting the decoded frame k as an image, in every inference mode."""

from __future__ import annotations

import subprocess
import sys
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from transeg.inference.modes import Predictor
from transeg.inference.predict import predict_files
from transeg.models.factory import build_model
from transeg.models.zoo import model_config

av = pytest.importorskip("av")

FRAMES, HEIGHT, WIDTH, FPS = 12, 64, 96, 10


@pytest.fixture(scope="module")
def clip(tmp_path_factory) -> Path:
    """12 frames of 64x96 at 10 fps, H.264: moving bars over noise."""
    path = tmp_path_factory.mktemp("video") / "clip.mp4"
    rng = np.random.default_rng(0)
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=FPS)
        stream.width, stream.height, stream.pix_fmt = WIDTH, HEIGHT, "yuv420p"
        for k in range(FRAMES):
            frame = rng.integers(0, 60, (HEIGHT, WIDTH, 3), dtype=np.uint8)
            frame[:, 8 * k:8 * k + 24, 0] = 230
            frame[20:40, :, 2] = 200
            for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return build_model(model_config("segformer-b0", num_classes=5)).eval()


def decoded_frames(path: Path) -> tuple[list[np.ndarray], Fraction]:
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        return [f.to_ndarray(format="rgb24") for f in container.decode(stream)], Fraction(stream.average_rate)


@pytest.mark.parametrize("options", [{"mode": "whole"}, {"mode": "slide", "crop": 48, "stride": 32},
                                     {"mode": "ms-flip", "scales": (0.75, 1.0)}], ids=["whole", "slide", "ms-flip"])
def test_video_keeps_frames_and_rate_and_matches_image_predict(clip, model, tmp_path, options):
    written = predict_files(model, [str(clip)], tmp_path, save_labels=True, **options)
    assert written == [tmp_path / "clip_overlay.mp4"]
    overlays, rate = decoded_frames(written[0])
    assert len(overlays) == FRAMES and rate == FPS and overlays[0].shape == (HEIGHT, WIDTH, 3)
    frames, _ = decoded_frames(clip)
    predictor = Predictor(model, **options)
    for k in (0, 5, FRAMES - 1):
        saved = np.asarray(Image.open(tmp_path / "clip_labels" / f"frame_{k:06d}.png"))
        alone = predictor.predict(frames[k])
        # frames go through the model 4 at a time: float sums in another order may flip a near-tie
        assert (saved == alone).mean() > 0.999, f"frame {k}"
    assert len(list((tmp_path / "clip_labels").iterdir())) == FRAMES


def test_video_without_labels_and_skip_existing(clip, model, tmp_path):
    predict_files(model, [str(clip)], tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["clip_overlay.mp4"]
    assert predict_files(model, [str(clip)], tmp_path, skip_existing=True) == []


@pytest.mark.parametrize("content", [b"", b"not a video at all" * 100, "truncated"])
def test_unreadable_video_is_one_line_exit_2(clip, tmp_path, content):
    bad = tmp_path / "bad.mp4"
    bad.write_bytes(clip.read_bytes()[:2000] if content == "truncated" else content)
    result = subprocess.run([sys.executable, "-m", "transeg", "predict", "segformer-b0", str(bad), "--num-classes",
                             "3", "--out", str(tmp_path / "out"), "--save-labels"], capture_output=True, text=True)
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert result.returncode == 2 and len(errors) == 1 and "bad.mp4" in errors[0], result.stderr
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "out" / "bad_overlay.mp4").exists() and not (tmp_path / "out" / "bad_labels").exists()


@pytest.mark.parametrize("backend", ["bf16", pytest.param("onnx", marks=pytest.mark.slow)])
def test_video_on_other_backends_matches_their_image_predict(clip, model, tmp_path, backend):
    """The frames of a video go through any backend: bf16 autocast, ONNX Runtime (an export: slow)."""
    from transeg.inference.backends import optimize_for_inference

    runner = optimize_for_inference(model, "eager", "bf16") if backend == "bf16" else \
        optimize_for_inference(model, "onnx")
    predict_files(runner, [str(clip)], tmp_path, save_labels=True)
    frames, _ = decoded_frames(clip)
    predictor = Predictor(runner)
    for k in (0, FRAMES - 1):
        saved = np.asarray(Image.open(tmp_path / "clip_labels" / f"frame_{k:06d}.png"))
        assert (saved == predictor.predict(frames[k])).mean() > 0.999, f"frame {k}"


def test_frames_go_through_the_model_four_at_a_time(clip, model, tmp_path):
    batches = []
    handle = model.register_forward_pre_hook(lambda module, args: batches.append(args[0].shape[0]))
    try:
        predict_files(model, [str(clip)], tmp_path)
    finally:
        handle.remove()
    assert batches == [4, 4, 4]  # 12 frames
