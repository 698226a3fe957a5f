"""Reproduce SegFormer Tables 1a and 1b (150 classes): parameters (M) and GMACs of MiT-B0…B5, and of
MiT-B2 with decoder widths C = 256…2048.

    python benchmarks/segformer_tables.py
"""

from __future__ import annotations

import transeg
from transeg.analysis.complexity import model_complexity
from transeg.models.factory import build_model
from transeg.models.zoo import model_config, with_decoder_width

# variant: (encoder M, decoder M, GMACs, input size) as printed in the paper
PAPER = {
    "b0": (3.4, 0.4, 8.4, 512), "b1": (13.1, 0.6, 15.9, 512), "b2": (24.2, 3.3, 62.4, 512),
    "b3": (44.0, 3.3, 79.0, 512), "b4": (60.8, 3.3, 95.7, 512), "b5": (81.4, 3.3, 183.3, 640),
}


# decoder width C: (GMACs, total params M) of MiT-B2 at 512x512, Table 1b
PAPER_1B = {256: (25.7, 24.7), 512: (39.8, 25.8), 768: (62.4, 27.5), 1024: (93.6, 29.6), 2048: (304.4, 43.4)}


def main() -> None:
    print("Table 1a\n")
    print("| model | size | encoder M (paper) | decoder M (paper) | total M | GMACs (paper) | GMACs diff |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for variant, (enc, dec, gmacs, size) in PAPER.items():
        stats = model_complexity(transeg.create_model(f"segformer-{variant}", num_classes=150), (size, size))
        p = stats["params"]
        diff = (stats["gmacs"] - gmacs) / gmacs * 100
        print(f"| segformer-{variant} | {size} | {p['encoder'] / 1e6:.2f} ({enc}) | {p['decoder'] / 1e6:.2f} ({dec})"
              f" | {p['total'] / 1e6:.2f} | {stats['gmacs']:.2f} ({gmacs}) | {diff:+.2f}% |")




def table_1b() -> None:
    print("\nTable 1b (MiT-B2, 512x512)\n")
    print("| C | GMACs (paper) | diff | params M (paper) | diff |")
    print("| --- | --- | --- | --- | --- |")
    for width, (gmacs, params) in PAPER_1B.items():
        stats = model_complexity(build_model(with_decoder_width(model_config("segformer-b2", 150), width)), (512, 512))
        total = stats["params"]["total"] / 1e6
        print(f"| {width} | {stats['gmacs']:.2f} ({gmacs}) | {(stats['gmacs'] - gmacs) / gmacs * 100:+.2f}% "
              f"| {total:.2f} ({params}) | {(total - params) / params * 100:+.2f}% |")


if __name__ == "__main__":
    main()
    table_1b()
