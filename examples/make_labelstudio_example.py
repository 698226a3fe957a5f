"""Write ``examples/labelstudio-shapes/``: 16 procedural scenes (JPEG) and the Label Studio JSON export
a person labelling them with brushes would download ("Export" -> "JSON"), the starting point of the
worked example in README.md.

The export follows Label Studio's documented task format: a list of tasks, each with ``data.image``
(an upload URL, whose ``<8 hex>-`` prefix Label Studio adds to uploaded files) and one annotation
whose results are ``brushlabels`` regions (``value.format: rle``, the RGBA run-length encoding of the
brush tool), one per class present; unlabelled pixels are left out, as in the tool. Run once from the
repository root: ``python examples/make_labelstudio_example.py`` (the output is committed).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from PIL import Image

from transeg.data.annotations.brush import encode_mask
from transeg.data.synthetic import SYNTHETIC_CLASSES, generate_scene

OUT = Path(__file__).parent / "labelstudio-shapes"
COUNT, SIZE, SEED = 16, (128, 128), 2024


def task(number: int, name: str, labels: np.ndarray, rng: np.random.Generator) -> dict:
    """One exported task: its image URL and one annotation of brush regions, one per object class present."""
    h, w = labels.shape
    results = [{"id": f"{number:02d}{c}", "type": "brushlabels", "from_name": "tag", "to_name": "image",
                "original_width": w, "original_height": h, "image_rotation": 0, "origin": "manual",
                "value": {"format": "rle", "rle": encode_mask(labels == c), "brushlabels": [SYNTHETIC_CLASSES[c]]}}
               for c in np.unique(labels) if c != 0]  # class 0 (background) is what nobody painted
    prefix = rng.bytes(4).hex()
    return {"id": number + 1, "data": {"image": f"/data/upload/1/{prefix}-{name}"},
            "annotations": [{"id": number + 1, "completed_by": 1, "was_cancelled": False, "ground_truth": False,
                             "result": results}],
            "predictions": []}


def main() -> None:
    rng = np.random.default_rng(SEED)
    (OUT / "images").mkdir(parents=True, exist_ok=True)
    tasks = []
    for number in range(COUNT):
        image, labels = generate_scene(rng, SIZE)
        name = f"scene_{number:02d}.jpg"
        Image.fromarray(image).save(OUT / "images" / name, quality=90)
        tasks.append(task(number, name, labels, rng))
    (OUT / "export.json").write_text(json.dumps(tasks, separators=(",", ":")) + "\n")
    print(f"wrote {COUNT} images and {OUT / 'export.json'}")


if __name__ == "__main__":
    main()
