"""Segment image files and write label maps and overlays: what ``transeg predict`` runs."""

from __future__ import annotations

import glob
from collections.abc import Iterable
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from transeg.data.images import IMAGE_SUFFIXES, read_image, save_label_png
from transeg.data.labels import default_palette
from transeg.data.rasters import is_tiff
from transeg.errors import TransegError
from transeg.inference.modes import Predictor
from transeg.inference.stream import predict_tiff
from transeg.inference.video import is_video, predict_video, video_outputs
from transeg.models.segmentor import Segmentor
from transeg.viz import legend_names, overlay_with_legend
from transeg.weights.files import write_atomic


def expand_images(specs: Iterable[str]) -> list[Path]:
    """Files, folders (their images, sorted) and glob patterns -> image paths, in order."""
    paths: list[Path] = []
    for spec in specs:
        path = Path(spec)
        if path.is_dir():
            found = sorted(p for p in path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
            if not found:
                raise TransegError(f"{path}: the folder holds no images ({', '.join(sorted(IMAGE_SUFFIXES))})")
            paths.extend(found)
        elif path.is_file():
            paths.append(path)
        elif glob.has_magic(spec):
            found = sorted(Path(p) for p in glob.glob(spec, recursive=True) if Path(p).is_file())
            if not found:
                raise TransegError(f"{spec}: the pattern matches no file")
            paths.extend(found)
        else:
            raise TransegError(f"{path}: no such file or directory")
    return paths


def output_stems(paths: list[Path]) -> list[str]:
    """File stems, made unique with a numeric suffix where two inputs share one."""
    seen: dict[str, int] = {}
    stems = []
    for path in paths:
        count = seen.get(path.stem, 0)
        seen[path.stem] = count + 1
        stems.append(path.stem if count == 0 else f"{path.stem}-{count}")
    return stems


def output_paths(out_dir: Path, stem: str, tiff: bool = False) -> tuple[Path, Path]:
    """The label map and the overlay ``predict_files`` writes for the image of ``stem``: a PNG label
    map, or for a ``tiff`` input a tiled TIFF one (band by band in slide mode, GeoTIFF tags kept)."""
    return out_dir / f"{stem}.{'tif' if tiff else 'png'}", out_dir / f"{stem}_overlay.jpg"


def label_outputs(images: Iterable[str], out_dir: Path) -> list[Path]:
    """The label map ``predict_files`` writes for each of ``images`` (files, folders or globs), in order."""
    paths = expand_images(images)
    stems = output_stems(paths)
    return [output_paths(out_dir, stem, is_tiff(path))[0] for path, stem in zip(paths, stems, strict=True)]


def write_probs(probs: torch.Tensor, out_dir: Path, stem: str, kind: str) -> None:
    """Write ``<stem>_confidence.png``, the (H, W) max class probability of (K, H, W) ``probs`` as
    round(255 p) (for K == 1: max(p, 1 - p)), and with ``kind`` 'npy' ``<stem>_probs.npy``, ``probs``
    as float16; both atomically."""
    top = probs.max(dim=0).values if probs.shape[0] > 1 else torch.maximum(probs[0], 1 - probs[0])
    confidence = (top.float().cpu().numpy() * 255 + 0.5).astype(np.uint8)
    write_atomic(out_dir / f"{stem}_confidence.png", lambda tmp: Image.fromarray(confidence).save(tmp, format="PNG"))
    if kind == "npy":
        array = probs.cpu().numpy().astype(np.float16)
        write_atomic(out_dir / f"{stem}_probs.npy", lambda tmp: np.save(tmp, array))


def _refuse_overwriting_inputs(inputs: list[Path], outputs: list[Path]) -> None:
    """A TransegError if an output would replace one of the input images."""
    originals = {path.resolve(): path for path in inputs}
    for output in outputs:
        if output.resolve() in originals:
            raise TransegError(f"{output}: the output would replace the input image {originals[output.resolve()]}; "
                               "choose another --out folder")


def _outputs(out_dir: Path, path: Path, stem: str) -> tuple[Path, Path]:
    """What ``predict_files`` writes for the input ``path``: label map and overlay of an image, overlay
    video and label folder of a video."""
    return video_outputs(out_dir, stem) if is_video(path) else output_paths(out_dir, stem, is_tiff(path))


def _done(out_dir: Path, path: Path, stem: str, save_labels: bool) -> bool:
    """Whether the outputs of ``path`` are all in ``out_dir`` (a video's is renamed into place last)."""
    if is_video(path):
        video, labels = video_outputs(out_dir, stem)
        return video.is_file() and (not save_labels or labels.is_dir())
    return all(p.is_file() for p in _outputs(out_dir, path, stem))


def predict_files(model: Segmentor, images: Iterable[str], out_dir: Path, alpha: float = 0.5,
                  skip_existing: bool = False, probs: str | None = None, legend: bool = True,
                  save_labels: bool = False, rank: int = 0, world_size: int = 1, **predictor_options) -> list[Path]:
    """Write ``<stem>.png`` (palette label map, input size; ``<stem>.tif`` for TIFF inputs, see
    ``predict_tiff``) and ``<stem>_overlay.jpg`` per image, each atomically (an interrupted run leaves
    no half-written file); returns the label maps written. A video (``VIDEO_SUFFIXES``) gives
    ``<stem>_overlay.mp4`` instead, and with ``save_labels`` its per-frame label maps in
    ``<stem>_labels/`` (see ``predict_video``); the video itself is returned. ``probs`` ('png' or
    'npy') adds the confidence map (and the probabilities) of ``write_probs`` for images other than
    TIFF. ``legend`` puts the classes present, with their palette colours, beside each overlay
    (``overlay_with_legend``; not on a TIFF's preview nor in a video). ``skip_existing`` skips the
    inputs whose outputs are all there, which resumes a long run.
    Process ``rank`` of ``world_size`` (torchrun) takes every ``world_size``-th input, so that the
    processes together write each output once."""
    paths = expand_images(images)
    stems = output_stems(paths)
    unsupported = [path for path in paths if is_tiff(path) or is_video(path)]
    if probs and unsupported:
        raise TransegError(f"{unsupported[0]}: --probs takes images other than TIFF and video")
    _refuse_overwriting_inputs(paths, [p for path, stem in zip(paths, stems, strict=True)
                                       for p in _outputs(out_dir, path, stem)])
    paths, stems = paths[rank::world_size], stems[rank::world_size]
    predictor = Predictor(model, **predictor_options)
    palette = np.asarray(model.config.palette, np.uint8) if model.config.palette else default_palette(
        max(model.num_classes, 2))
    names = legend_names(model.config.class_names, max(model.num_classes, 2))
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn())
    with Progress(*columns, transient=True, disable=len(paths) < 2 or rank > 0) as progress:
        task = progress.add_task("predict", total=len(paths))
        for path, stem in zip(paths, stems, strict=True):
            if skip_existing and _done(out_dir, path, stem, save_labels):
                progress.advance(task)
                continue
            if is_video(path):
                predict_video(predictor, path, out_dir, stem, palette, alpha, save_labels)
                written.append(video_outputs(out_dir, stem)[0])
                progress.advance(task)
                continue
            label_path, overlay_path = _outputs(out_dir, path, stem)
            if is_tiff(path):
                previews: list[np.ndarray] = []
                write_atomic(label_path, lambda tmp, path=path, previews=previews: previews.append(
                    predict_tiff(predictor, path, Path(tmp), palette, alpha)))
                blended = Image.fromarray(previews[0])
            else:
                image = read_image(path)
                if probs:
                    labels, probabilities = predictor.predict_with_probs(image)
                    write_probs(probabilities, out_dir, stem, probs)
                else:
                    labels = predictor.predict(image)
                write_atomic(label_path, lambda tmp, labels=labels: save_label_png(labels, tmp, palette))
                blended = Image.fromarray(np.ascontiguousarray(
                    overlay_with_legend(image, labels, palette, names, alpha=alpha, legend=legend)))
            write_atomic(overlay_path, lambda tmp, blended=blended: blended.save(tmp, quality=92))
            written.append(label_path)
            progress.advance(task)
    return written
