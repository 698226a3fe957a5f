"""Logits equal those of transformers' SegformerForSemanticSegmentation on the same weights."""

from __future__ import annotations

import pytest
import torch

import transeg
from tests.conftest import hf_segformer

SIZES = [(512, 512), (480, 640), (375, 500)]


@pytest.mark.parametrize("variant", ["b0", "b2"])
def test_logits_match_transformers(variant, tmp_path):
    hf = hf_segformer(variant, num_labels=150, seed=1)
    hf.save_pretrained(tmp_path)
    ours = transeg.load_model(tmp_path)
    assert ours.config.name == f"segformer-{variant}"
    torch.manual_seed(2)
    for size in SIZES:
        x = torch.randn(1, 3, *size)
        with torch.inference_mode():
            expected = hf(pixel_values=x).logits
            got = ours(x)
        assert got.shape == expected.shape
        diff = (got - expected).abs().max().item()
        assert diff < 1e-4, f"{variant} at {size}: max abs diff {diff:.2e}"


def test_transformers_5x_key_names_load(tmp_path):
    """In-memory transformers 5.x names (``segformer.stages…``) convert as well as the 4.x ones."""
    from safetensors.torch import save_file

    hf = hf_segformer("b0", num_labels=7, seed=3)
    hf.save_pretrained(tmp_path)
    state = {k: v.contiguous() for k, v in hf.state_dict().items()}
    save_file(state, tmp_path / "model.safetensors")
    from safetensors import safe_open

    with safe_open(str(tmp_path / "model.safetensors"), "pt") as f:
        keys = list(f.keys())
    x = torch.randn(1, 3, 96, 128)
    with torch.inference_mode():
        expected = hf(pixel_values=x).logits
        got = transeg.load_model(tmp_path)(x)
    assert (got - expected).abs().max().item() < 1e-4
    import transformers

    if int(transformers.__version__.split(".")[0]) >= 5:  # 5.x renamed the modules in memory
        assert any(k.startswith("segformer.stages.") for k in keys)
        assert any("linear_projections" in k for k in keys)
