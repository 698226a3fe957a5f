"""Segment a video: decode its frames (PyAV), predict them in batches and write an overlay video with
the same frame count and frame rate, and optionally one label PNG per frame."""

from __future__ import annotations

import importlib
import os
from collections.abc import Iterator
from fractions import Fraction
from pathlib import Path
from types import ModuleType

import numpy as np

from transeg.data.images import save_label_png
from transeg.errors import TransegError
from transeg.inference.modes import Predictor
from transeg.viz import overlay
from transeg.weights.files import write_atomic

VIDEO_SUFFIXES = (".mp4", ".m4v", ".mov", ".mkv", ".avi", ".webm")
FRAME_BATCH = 4  # frames per forward pass


def is_video(path: str | os.PathLike[str]) -> bool:
    """Whether ``path`` names a video by its suffix."""
    return Path(path).suffix.lower() in VIDEO_SUFFIXES


def _av() -> ModuleType:
    try:
        return importlib.import_module("av")
    except ImportError:
        raise TransegError("video input needs PyAV: pip install 'transeg[video]'") from None


def video_outputs(out_dir: Path, stem: str) -> tuple[Path, Path]:
    """The overlay video and the folder of per-frame label maps written for the video of ``stem``."""
    return out_dir / f"{stem}_overlay.mp4", out_dir / f"{stem}_labels"


def _frames(path: Path) -> Iterator[tuple[np.ndarray, Fraction]]:
    """(H, W, 3) uint8 RGB frames of the first video stream of ``path``, each with the stream's rate."""
    av = _av()
    try:
        with av.open(str(path)) as container:
            if not container.streams.video:
                raise TransegError(f"{path}: holds no video stream")
            stream = container.streams.video[0]
            rate = stream.average_rate or stream.guessed_rate
            if not rate:
                raise TransegError(f"{path}: the video stream declares no frame rate")
            for frame in container.decode(stream):
                yield frame.to_ndarray(format="rgb24"), Fraction(rate)
    except av.FFmpegError as exc:
        raise TransegError(f"{path}: not a readable video ({exc.strerror or type(exc).__name__})") from None


def _batches(frames: Iterator[tuple[np.ndarray, Fraction]], size: int) -> Iterator[list[tuple[np.ndarray, Fraction]]]:
    batch: list[tuple[np.ndarray, Fraction]] = []
    for item in frames:
        batch.append(item)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


class _OverlayWriter:
    """An H.264 MP4 written to ``tmp`` at ``rate``; the stream opens at the first frame's size."""

    def __init__(self, tmp: Path, rate: Fraction) -> None:
        self.container = _av().open(str(tmp), mode="w", format="mp4")
        self.rate = rate
        self.stream = None

    def write(self, picture: np.ndarray) -> None:
        av = _av()
        if self.stream is None:
            self.stream = self.container.add_stream("libx264", rate=self.rate)
            self.stream.height, self.stream.width = picture.shape[0] // 2 * 2, picture.shape[1] // 2 * 2
            self.stream.pix_fmt = "yuv420p"
            self.stream.options = {"crf": "18"}
        even = np.ascontiguousarray(picture[: self.stream.height, : self.stream.width])
        for packet in self.stream.encode(av.VideoFrame.from_ndarray(even, format="rgb24")):
            self.container.mux(packet)

    def close(self) -> None:
        if self.stream is not None:
            for packet in self.stream.encode():
                self.container.mux(packet)
        self.container.close()


def predict_video(predictor: Predictor, path: Path, out_dir: Path, stem: str, palette: np.ndarray,
                  alpha: float = 0.5, save_labels: bool = False, batch: int = FRAME_BATCH) -> int:
    """Write ``<stem>_overlay.mp4`` (H.264, the input's frame rate and frame count; an odd width or
    height loses its last column or row, as yuv420p needs even sides) and, with ``save_labels``,
    ``<stem>_labels/frame_NNNNNN.png`` per frame, predicting ``batch`` frames per forward pass.
    The video is written atomically. Returns the number of frames."""
    video_path, labels_dir = video_outputs(out_dir, stem)  # write_atomic makes the folder at the first frame
    count = 0

    def write(tmp: str) -> None:
        nonlocal count
        writer = None
        try:
            for chunk in _batches(_frames(path), batch):
                images = [image for image, _ in chunk]
                writer = writer or _OverlayWriter(Path(tmp), chunk[0][1])
                for image, labels in zip(images, predictor.predict_batch(images), strict=True):
                    writer.write(overlay(image, labels, palette, alpha=alpha))
                    if save_labels:
                        target = labels_dir / f"frame_{count:06d}.png"
                        write_atomic(target, lambda t, labels=labels: save_label_png(labels, t, palette))
                    count += 1
        finally:
            if writer is not None:
                writer.close()
        if writer is None:
            raise TransegError(f"{path}: the video holds no frames")

    write_atomic(video_path, write)
    return count

