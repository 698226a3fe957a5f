"""A seeded fraction of a dataset (transeg.data.subset, Segmenter Table 5)."""

from __future__ import annotations

import itertools

import pytest

from transeg.data.datasets import SegmentationDataset
from transeg.data.subset import subset, subset_indices
from transeg.errors import TransegError


def test_size_and_order():
    assert len(subset_indices(100, 0.25)) == 25
    assert len(subset_indices(10, 0.33)) == 3  # round(3.3)
    assert len(subset_indices(10, 0.01)) == 1  # at least one image
    assert subset_indices(7, 1.0) == list(range(7))
    kept = subset_indices(50, 0.5, seed=3)
    assert kept == sorted(set(kept))


def test_same_seed_same_images_other_seed_other_images():
    assert subset_indices(200, 0.1, seed=1) == subset_indices(200, 0.1, seed=1)
    assert subset_indices(200, 0.1, seed=1) != subset_indices(200, 0.1, seed=2)


def test_one_seed_gives_nested_subsets():
    fractions = (0.1, 0.25, 0.5, 1.0)
    sets = [set(subset_indices(120, f, seed=7)) for f in fractions]
    assert all(small < large for small, large in itertools.pairwise(sets))


def test_dataset_subset_keeps_everything_but_samples():
    full = SegmentationDataset([(f"{i}.png", f"{i}.label.png") for i in range(8)], ["a", "b"], name="toy")
    part = subset(full, 0.5, seed=0)
    assert len(part) == 4 and len(full) == 8
    assert part.samples == [full.samples[i] for i in subset_indices(8, 0.5, 0)]
    assert part.classes == full.classes and part.label_lut is full.label_lut
    assert part.name == "toy[subset 0.5, seed 0]"


@pytest.mark.parametrize("fraction", [0, -0.5, 1.5])
def test_fraction_out_of_range(fraction):
    with pytest.raises(TransegError, match=f"data.subset must be a fraction in \\(0, 1\\], got {fraction}"):
        subset_indices(10, fraction)
