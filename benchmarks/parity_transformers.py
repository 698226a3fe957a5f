"""Max abs logit difference between transeg and transformers' SegformerForSemanticSegmentation.

Random weights (and random BatchNorm statistics), saved with ``save_pretrained`` and loaded with
``transeg.load_model``. Needs the dev extra (transformers).

    python benchmarks/parity_transformers.py
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import transeg
from tests.conftest import hf_segformer


def main() -> None:
    print("| model | input | max abs diff |")
    print("| --- | --- | --- |")
    for variant in ("b0", "b2"):
        hf = hf_segformer(variant, num_labels=150, seed=0)
        with tempfile.TemporaryDirectory() as directory:
            hf.save_pretrained(directory)
            ours = transeg.load_model(directory)
        for size in [(512, 512), (480, 640), (375, 500)]:
            x = torch.randn(1, 3, *size, generator=torch.Generator().manual_seed(0))
            with torch.inference_mode():
                diff = (ours(x) - hf(pixel_values=x).logits).abs().max().item()
            print(f"| segformer-{variant} | {size[0]}x{size[1]} | {diff:.1e} |")


if __name__ == "__main__":
    main()
