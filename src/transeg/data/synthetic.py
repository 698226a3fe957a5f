"""Procedural demo scenes for ``transeg demo``: small images a SegFormer-B0 learns on a CPU in minutes.

Every scene is a two-tone sky/ground background with one object of each class drawn over it at a
random position, size and rotation (in random order, so objects occlude each other). All colours
come from one shared range, so colour alone does not tell the classes apart: each class has its own
texture and shape, and the smooth ``disc`` differs from the smooth background only by its shape::

    background  sky/ground linear gradients split by a wavy horizon
    disc        ellipse with radial shading (a highlight off its centre)
    square      rotated square with a checkerboard aligned to its sides (cells 5-7 px)
    stripes     lumpy blob with near-horizontal stripes (period 7-10 px, within ±20°)
    dots        lumpy blob with a rotated lattice of dots (spacing 7-9 px)
    triangle    triangle with a blocky noise grain (2 px blocks)

Sizes and texture scales are given for 128 px and scale with ``min(H, W)``. Label maps hold the
class indices ``0..len(SYNTHETIC_CLASSES)-1``; no pixel is ignored.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from pathlib import Path

import numpy as np
import yaml
from PIL import Image

from transeg.errors import TransegError

SYNTHETIC_CLASSES = ("background", "disc", "square", "stripes", "dots", "triangle")
SYNTHETIC_PALETTE = np.array(
    [(0, 0, 0), (230, 25, 75), (60, 180, 75), (255, 225, 25), (0, 130, 200), (245, 130, 48)],
    dtype=np.uint8,
)
# Bump when the scenes change, so that write_synthetic_dataset regenerates existing folders.
SYNTHETIC_VERSION = 2

_COLOUR_RANGE = (40.0, 215.0)  # every base colour channel is drawn from here, whatever the class
_EXTRA_OBJECT_P = 0.5  # chance of a second object of a random class


def _colour(rng: np.random.Generator) -> np.ndarray:
    """(3,) float32 colour from the range shared by all classes."""
    return rng.uniform(*_COLOUR_RANGE, 3).astype(np.float32)


def _contrast(rng: np.random.Generator, base: np.ndarray) -> np.ndarray:
    """(3,) float32 second texture colour, 60-100 levels lighter or darker than ``base``."""
    step = rng.uniform(60.0, 100.0) + rng.uniform(-15.0, 15.0, 3)
    sign = -1.0 if base.mean() > 127.5 else 1.0
    return np.clip(base + sign * step, 0.0, 255.0).astype(np.float32)


def _rotate(dy: np.ndarray, dx: np.ndarray, angle: float) -> tuple[np.ndarray, np.ndarray]:
    """Coordinates (u, v) of the offsets (dy, dx) in a frame rotated by ``angle`` radians."""
    c, s = math.cos(angle), math.sin(angle)
    return dx * c + dy * s, dy * c - dx * s


def _mix(base: np.ndarray, other: np.ndarray, where: np.ndarray) -> np.ndarray:
    """(h, w, 3) ``other`` where the (h, w) boolean ``where`` holds, else ``base``."""
    return np.where(where[..., None], other, base)


def _background(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    """(H, W, 3) float32 sky and ground, each a vertical gradient, split by a wavy horizon."""
    y = np.arange(height, dtype=np.float32)[:, None, None] / max(height - 1, 1)
    x = np.arange(width, dtype=np.float32)[None, :, None] / max(width - 1, 1)
    tilt = rng.uniform(-0.3, 0.3)
    t = np.clip(y + tilt * (x - 0.5), 0.0, 1.0)
    sky = (1 - t) * _colour(rng) + t * _colour(rng)
    ground = (1 - t) * _colour(rng) + t * _colour(rng)
    horizon = rng.uniform(0.3, 0.7) + rng.uniform(0.0, 0.06) * np.sin(
        2 * np.pi * rng.uniform(0.5, 2.0) * x + rng.uniform(0, 2 * np.pi)
    )
    return np.where(y < horizon, sky, ground)


# --------------------------------------------------------------------------- shapes
# Each takes the offsets (dy, dx) from the object's centre, (h, w) broadcastable float32 arrays,
# and its radius in pixels; it returns the (h, w) boolean mask of the object.
def _ellipse(rng: np.random.Generator, dy: np.ndarray, dx: np.ndarray, radius: float) -> np.ndarray:
    u, v = _rotate(dy, dx, rng.uniform(0, np.pi))
    return (u / radius) ** 2 + (v / (radius * rng.uniform(0.7, 1.0))) ** 2 <= 1.0


def _square(rng: np.random.Generator, dy: np.ndarray, dx: np.ndarray, radius: float) -> np.ndarray:
    u, v = _rotate(dy, dx, rng.uniform(0, np.pi / 2))
    half = 0.85 * radius
    return (np.abs(u) <= half) & (np.abs(v) <= half * rng.uniform(0.8, 1.0))


def _blob(rng: np.random.Generator, dy: np.ndarray, dx: np.ndarray, radius: float) -> np.ndarray:
    theta = np.arctan2(dy, dx)
    edge = radius * (
        1.0
        + rng.uniform(0.05, 0.2) * np.cos(2 * theta + rng.uniform(0, 2 * np.pi))
        + rng.uniform(0.05, 0.15) * np.cos(3 * theta + rng.uniform(0, 2 * np.pi))
    )
    return dy**2 + dx**2 <= edge**2


def _triangle(rng: np.random.Generator, dy: np.ndarray, dx: np.ndarray, radius: float) -> np.ndarray:
    angles = rng.uniform(0, 2 * np.pi) + 2 * np.pi / 3 * np.arange(3) + rng.uniform(-0.3, 0.3, 3)
    reach = 1.3 * radius * rng.uniform(0.9, 1.1, 3)
    px, py = reach * np.cos(angles), reach * np.sin(angles)  # counter-clockwise corners
    inside = np.ones(np.broadcast_shapes(dy.shape, dx.shape), dtype=bool)
    for i in range(3):
        ex, ey = px[(i + 1) % 3] - px[i], py[(i + 1) % 3] - py[i]
        inside &= ex * (dy - py[i]) - ey * (dx - px[i]) >= 0
    return inside


# --------------------------------------------------------------------------- textures
# Same arguments as the shapes plus the pixel scale (min(H, W) / 128); each returns the (h, w, 3)
# float32 colours of the object.
def _shaded(rng: np.random.Generator, dy: np.ndarray, dx: np.ndarray, radius: float,
            scale: float) -> np.ndarray:
    light = rng.uniform(0, 2 * np.pi)
    ly, lx = 0.35 * radius * math.sin(light), 0.35 * radius * math.cos(light)
    falloff = ((dy - ly) ** 2 + (dx - lx) ** 2) / radius**2
    return _colour(rng) * np.clip(1.3 - 0.5 * falloff, 0.45, 1.3)[..., None]


def _checker(rng: np.random.Generator, dy: np.ndarray, dx: np.ndarray, radius: float,
             scale: float) -> np.ndarray:
    u, v = _rotate(dy, dx, rng.uniform(0, np.pi / 2))
    cell = rng.uniform(5.0, 7.0) * scale
    base = _colour(rng)
    return _mix(base, _contrast(rng, base), (np.floor(u / cell) + np.floor(v / cell)) % 2 == 1)


def _stripes(rng: np.random.Generator, dy: np.ndarray, dx: np.ndarray, radius: float,
             scale: float) -> np.ndarray:
    _, across = _rotate(dy, dx, np.deg2rad(rng.uniform(-20.0, 20.0)))
    phase = across / (rng.uniform(7.0, 10.0) * scale) + rng.uniform()
    base = _colour(rng)
    return _mix(base, _contrast(rng, base), phase % 1.0 < 0.5)


def _dots(rng: np.random.Generator, dy: np.ndarray, dx: np.ndarray, radius: float,
          scale: float) -> np.ndarray:
    u, v = _rotate(dy, dx, rng.uniform(0, np.pi / 2))
    spacing = rng.uniform(7.0, 9.0) * scale
    fu = (u / spacing + rng.uniform()) % 1.0 - 0.5
    fv = (v / spacing + rng.uniform()) % 1.0 - 0.5
    base = _colour(rng)
    return _mix(base, _contrast(rng, base), fu**2 + fv**2 < 0.3**2)


def _grain(rng: np.random.Generator, dy: np.ndarray, dx: np.ndarray, radius: float,
           scale: float) -> np.ndarray:
    h, w = np.broadcast_shapes(dy.shape, dx.shape)
    block = max(round(2 * scale), 1)
    noise = rng.normal(0.0, 1.0, (-(-h // block), -(-w // block))).astype(np.float32)
    noise = np.repeat(np.repeat(noise, block, axis=0), block, axis=1)[:h, :w]
    return _colour(rng) + np.clip(40.0 * noise, -80.0, 80.0)[..., None]


_Shape = Callable[[np.random.Generator, np.ndarray, np.ndarray, float], np.ndarray]
_Texture = Callable[[np.random.Generator, np.ndarray, np.ndarray, float, float], np.ndarray]
_OBJECTS: dict[int, tuple[_Shape, _Texture]] = {
    1: (_ellipse, _shaded),
    2: (_square, _checker),
    3: (_blob, _stripes),
    4: (_blob, _dots),
    5: (_triangle, _grain),
}


def generate_scene(rng: np.random.Generator, size: tuple[int, int] = (128, 128)) -> tuple[np.ndarray, np.ndarray]:
    """One random scene: the (H, W, 3) uint8 image and its (H, W) uint8 label map of class indices."""
    height, width = size
    scale = min(height, width) / 128
    image = _background(rng, height, width)
    labels = np.zeros((height, width), dtype=np.uint8)
    classes = list(rng.permutation(list(_OBJECTS)))
    if rng.uniform() < _EXTRA_OBJECT_P:
        classes.insert(rng.integers(len(classes) + 1), rng.choice(list(_OBJECTS)))
    for cls in classes:
        radius = rng.uniform(16.0, 30.0) * scale
        cy, cx = rng.uniform(0.1, 0.9) * height, rng.uniform(0.1, 0.9) * width
        y0, y1 = max(int(cy - 1.5 * radius), 0), min(int(cy + 1.5 * radius) + 1, height)
        x0, x1 = max(int(cx - 1.5 * radius), 0), min(int(cx + 1.5 * radius) + 1, width)
        dy = np.arange(y0, y1, dtype=np.float32)[:, None] - np.float32(cy)
        dx = np.arange(x0, x1, dtype=np.float32)[None, :] - np.float32(cx)
        shape, texture = _OBJECTS[int(cls)]
        mask = shape(rng, dy, dx, radius)
        image[y0:y1, x0:x1][mask] = texture(rng, dy, dx, radius, scale)[mask]
        labels[y0:y1, x0:x1][mask] = cls
    image = image * rng.uniform(0.85, 1.15) + rng.uniform(-12.0, 12.0)
    image += rng.normal(0.0, 3.0, image.shape).astype(np.float32)
    return np.clip(image + 0.5, 0, 255).astype(np.uint8), labels


def _file_names(count: int) -> list[str]:
    width = max(4, len(str(count - 1)))
    return [f"{i:0{width}d}.png" for i in range(count)]


def _is_complete(root: Path, params: dict) -> bool:
    """Whether ``root`` holds every file of a set written with exactly ``params``."""
    try:
        if json.loads((root / "synthetic.json").read_text()) != params:
            return False
    except (OSError, ValueError):
        return False
    return (root / "classes.yaml").is_file() and all(
        (root / kind / split / name).is_file()
        for split in ("train", "val")
        for name in _file_names(params[f"num_{split}"])
        for kind in ("images", "labels")
    )


def write_synthetic_dataset(root: str | Path, num_train: int, num_val: int,
                            size: tuple[int, int] = (128, 128), seed: int = 0) -> Path:
    """Write a "folder" dataset of synthetic scenes under ``root`` and return ``root``.

    Layout: ``images/{train,val}/NNNN.png`` (RGB), ``labels/{train,val}/NNNN.png`` (greyscale class
    indices), ``classes.yaml`` (classes and palette) and ``synthetic.json`` (the parameters). Train and
    val draw from the independent streams ``[seed, 0]`` and ``[seed, 1]``. A folder already complete
    for the same parameters is left as it is; otherwise the set is rewritten and numbered PNGs left
    over from another count are removed.
    """
    root = Path(root)
    height, width = size
    if num_train < 1 or num_val < 1:
        raise TransegError(f"synthetic dataset: need at least one train and one val scene, "
                           f"got {num_train} and {num_val}")
    if height < 32 or width < 32:
        raise TransegError(f"synthetic dataset: scenes must be at least 32x32, got {height}x{width}")
    if seed < 0:
        raise TransegError(f"synthetic dataset: the seed must be non-negative, got {seed}")
    params = {"version": SYNTHETIC_VERSION, "num_train": num_train, "num_val": num_val,
              "size": [height, width], "seed": seed}
    if _is_complete(root, params):
        return root
    root.mkdir(parents=True, exist_ok=True)
    (root / "synthetic.json").unlink(missing_ok=True)  # written back last: marks a complete set
    for stream, (split, count) in enumerate((("train", num_train), ("val", num_val))):
        names = _file_names(count)
        for kind in ("images", "labels"):
            folder = root / kind / split
            folder.mkdir(parents=True, exist_ok=True)
            for stale in folder.glob("*.png"):
                if stale.stem.isdigit() and stale.name not in names:
                    stale.unlink()
        rng = np.random.default_rng([seed, stream])
        for name in names:
            image, labels = generate_scene(rng, (height, width))
            Image.fromarray(image).save(root / "images" / split / name)
            Image.fromarray(labels).save(root / "labels" / split / name)
    (root / "classes.yaml").write_text(yaml.safe_dump(
        {"classes": list(SYNTHETIC_CLASSES), "palette": SYNTHETIC_PALETTE.tolist()},
        default_flow_style=None, sort_keys=False,
    ))
    (root / "synthetic.json").write_text(json.dumps(params) + "\n")
    return root
