"""Reproduce SegFormer Table 1a (150 classes): parameters (M) and GMACs of MiT-B0…B5.

    python benchmarks/table1a.py
"""

from __future__ import annotations

import transeg
from transeg.analysis.complexity import model_complexity

# variant: (encoder M, decoder M, GMACs, input size) as printed in the paper
PAPER = {
    "b0": (3.4, 0.4, 8.4, 512), "b1": (13.1, 0.6, 15.9, 512), "b2": (24.2, 3.3, 62.4, 512),
    "b3": (44.0, 3.3, 79.0, 512), "b4": (60.8, 3.3, 95.7, 512), "b5": (81.4, 3.3, 183.3, 640),
}


def main() -> None:
    print("| model | size | encoder M (paper) | decoder M (paper) | total M | GMACs (paper) | GMACs diff |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for variant, (enc, dec, gmacs, size) in PAPER.items():
        stats = model_complexity(transeg.create_model(f"segformer-{variant}", num_classes=150), (size, size))
        p = stats["params"]
        diff = (stats["gmacs"] - gmacs) / gmacs * 100
        print(f"| segformer-{variant} | {size} | {p['encoder'] / 1e6:.2f} ({enc}) | {p['decoder'] / 1e6:.2f} ({dec})"
              f" | {p['total'] / 1e6:.2f} | {stats['gmacs']:.2f} ({gmacs}) | {diff:+.2f}% |")


if __name__ == "__main__":
    main()
