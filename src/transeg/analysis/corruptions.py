"""The corruptions of SegFormer's Table 5 (Cityscapes-C style), seeded, and their on-disk cache.

``corrupt_image`` applies one of ``imagecorruptions``' corruptions (``pip install
'transeg[analysis]'``) at a severity 1..5; the result depends only on (seed, corruption, severity,
image index). ``CorruptionCache`` keeps results as lossless PNGs under
``<root>/<corruption>/<severity>/<image stem>.png``, with a manifest recording the seed.
"""

from __future__ import annotations

import hashlib
import inspect
import json
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path

import numpy as np
from PIL import Image

from transeg.data.images import read_image
from transeg.data.transforms import resize_image
from transeg.errors import TransegError

# Table 5's columns, in the paper's order.
CORRUPTION_GROUPS: dict[str, tuple[str, ...]] = {
    "blur": ("motion_blur", "defocus_blur", "glass_blur", "gaussian_blur"),
    "noise": ("gaussian_noise", "impulse_noise", "shot_noise", "speckle_noise"),
    "digital": ("brightness", "contrast", "saturate", "jpeg_compression"),
    "weather": ("snow", "spatter", "fog", "frost"),
}
CORRUPTIONS: tuple[str, ...] = tuple(name for names in CORRUPTION_GROUPS.values() for name in names)
FAMILY: dict[str, str] = {name: group for group, names in CORRUPTION_GROUPS.items() for name in names}
SEVERITIES: tuple[int, ...] = (1, 2, 3, 4, 5)

CACHE_MANIFEST = "manifest.json"
CACHE_FORMAT = "transeg-corruptions"
_INSTALL_HINT = "pip install 'transeg[analysis]'"


def check_severities(values: Iterable[int]) -> tuple[int, ...]:
    values = list(values)
    bad = [v for v in values if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or not 1 <= v <= 5]
    if bad or not values:
        raise TransegError(f"severity must be an integer in 1..5, got {bad[0] if bad else 'none'!r}")
    return tuple(sorted({int(v) for v in values}))



def load_corrupt() -> Callable[..., np.ndarray]:
    """``imagecorruptions.corrupt``, or a TransegError saying how to install it."""
    try:
        from imagecorruptions import corrupt
    except ImportError as exc:
        raise TransegError(f"the robustness benchmark needs imagecorruptions ({exc}): {_INSTALL_HINT}") from None
    return corrupt


def corruption_seed(seed: int, corruption: str, severity: int, index: int) -> int:
    """A 32-bit seed from (seed, corruption, severity, image index), the same on every platform."""
    digest = hashlib.sha256(f"{seed}/{corruption}/{severity}/{index}".encode()).digest()
    return int.from_bytes(digest[:4], "little")


def _takes_seed(corruption: str) -> bool:
    """Whether the corruption function draws from its own ``seed`` argument (not only np.random)."""
    from imagecorruptions import corruption_dict

    return "seed" in inspect.signature(corruption_dict[corruption]).parameters


def to_uint8(array: np.ndarray, shape: Sequence[int]) -> np.ndarray:
    """A corruption's output as uint8 (clipped and rounded) RGB of ``shape`` (H, W, 3)."""
    out = np.asarray(array)
    if out.dtype != np.uint8:
        out = np.clip(np.rint(out.astype(np.float64)), 0, 255).astype(np.uint8)
    if out.ndim == 2:
        out = np.stack([out] * 3, axis=-1)
    out = out[..., :3]
    if out.shape[:2] != tuple(shape[:2]):
        out = resize_image(np.ascontiguousarray(out), int(shape[0]), int(shape[1]))
    return np.array(out, order="C") if not out.flags.writeable else np.ascontiguousarray(out)


def corrupt_image(image: np.ndarray, corruption: str, severity: int, seed: int = 0, index: int = 0) -> np.ndarray:
    """(H, W, 3) uint8 → the same image with ``corruption`` at ``severity``, reproducibly.

    NumPy's global generator (which imagecorruptions draws from) is seeded from
    :func:`corruption_seed` for the call and restored afterwards; corruptions with their own
    ``seed`` argument (glass blur, impulse noise) get the same seed.
    """
    if corruption not in CORRUPTIONS:
        raise TransegError(f"unknown corruption {corruption!r} (valid: {', '.join(CORRUPTIONS)})")
    check_severities([severity])
    if min(image.shape[:2]) < 32:
        raise TransegError(f"image {image.shape[1]}x{image.shape[0]} is too small to corrupt (at least 32x32)")
    corrupt = load_corrupt()
    value = corruption_seed(seed, corruption, severity, index)
    kwargs = {"seed": value} if _takes_seed(corruption) else {}
    state = np.random.get_state()
    np.random.seed(value)
    try:
        out = corrupt(np.ascontiguousarray(image), corruption_name=corruption, severity=int(severity), **kwargs)
    finally:
        np.random.set_state(state)
    return to_uint8(out, image.shape)


class CorruptionCache:
    """Corrupted images as lossless PNGs: ``root/<corruption>/<severity>/<stem>.png``.

    ``root/manifest.json`` records the seed; a cache made with another seed is refused.
    """

    def __init__(self, root: str | Path, seed: int) -> None:
        self.root = Path(root)
        self.seed = seed
        manifest = self.root / CACHE_MANIFEST
        if manifest.is_file():
            self._check_manifest(manifest)
        elif self.root.is_dir() and any(self.root.iterdir()):
            raise TransegError(f"{self.root}: not empty and without a {CACHE_MANIFEST}: not a corruption cache "
                               "(give an empty or new folder to --cache)")
        else:
            self.root.mkdir(parents=True, exist_ok=True)
            manifest.write_text(json.dumps({"format": CACHE_FORMAT, "version": 1, "seed": seed,
                                            "layout": "<corruption>/<severity>/<image stem>.png"}, indent=2))

    def _check_manifest(self, manifest: Path) -> None:
        try:
            data = json.loads(manifest.read_text())
        except (OSError, ValueError) as exc:
            raise TransegError(f"{manifest}: cannot read the cache manifest ({exc})") from None
        if not isinstance(data, dict) or data.get("format") != CACHE_FORMAT:
            raise TransegError(f"{manifest}: not a transeg corruption cache manifest")
        if data.get("seed") != self.seed:
            raise TransegError(f"{self.root}: this cache holds corruptions made with seed {data.get('seed')}, not "
                               f"{self.seed}: pass --seed {data.get('seed')} or use another --cache folder")

    def path(self, corruption: str, severity: int, stem: str) -> Path:
        return self.root / corruption / str(severity) / f"{stem}.png"

    def get(self, corruption: str, severity: int, stem: str, shape: Sequence[int]) -> np.ndarray | None:
        """The cached image, None when absent; a TransegError when its size does not match ``shape``."""
        path = self.path(corruption, severity, stem)
        if not path.is_file():
            return None
        image = read_image(path)
        if image.shape != tuple(shape):
            raise TransegError(f"{path}: cached image is {image.shape[1]}x{image.shape[0]}, the original "
                               f"{shape[1]}x{shape[0]}: the cache belongs to other images; use another --cache")
        return image

    def put(self, corruption: str, severity: int, stem: str, image: np.ndarray) -> None:
        """Write ``image`` (via a temporary file, so an interrupted run leaves no half PNG)."""
        path = self.path(corruption, severity, stem)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.stem}.tmp.png")
        Image.fromarray(image).save(tmp)
        tmp.replace(path)
