"""Shared fixtures: small random checkpoints in the formats users hold, built locally."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


def randomize_batchnorm(module: torch.nn.Module, seed: int = 0) -> None:
    """Give every BatchNorm non-trivial affine parameters and running statistics."""
    gen = torch.Generator().manual_seed(seed)
    for m in module.modules():
        if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
            m.running_mean.copy_(torch.randn(m.running_mean.shape, generator=gen))
            m.running_var.copy_(torch.rand(m.running_var.shape, generator=gen) + 0.5)
            m.weight.data.copy_(torch.randn(m.weight.shape, generator=gen))
            m.bias.data.copy_(torch.randn(m.bias.shape, generator=gen))


def hf_segformer(variant: str, num_labels: int, seed: int = 0):
    """A transformers SegformerForSemanticSegmentation with random weights (eval mode)."""
    transformers = pytest.importorskip("transformers")
    from transeg.models.zoo import MIT_VARIANTS, SEGFORMER_DECODER_DIM

    mit = MIT_VARIANTS[variant]
    config = transformers.SegformerConfig(
        hidden_sizes=list(mit.widths), depths=list(mit.depths),
        decoder_hidden_size=SEGFORMER_DECODER_DIM[variant], num_labels=num_labels,
    )
    torch.manual_seed(seed)
    model = transformers.SegformerForSemanticSegmentation(config)
    with torch.no_grad():
        randomize_batchnorm(model, seed)
    return model.eval()


@pytest.fixture(scope="session")
def hf_b0_dir(tmp_path_factory) -> Path:
    """A transformers checkpoint directory of a random SegFormer-B0 with 19 classes."""
    directory = tmp_path_factory.mktemp("hf_b0")
    hf_segformer("b0", 19).save_pretrained(directory)
    return directory


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Tests marked ``cuda`` are skipped on a machine without a CUDA GPU (and only there)."""
    if torch.cuda.is_available():
        return
    no_gpu = pytest.mark.skip(reason="needs a CUDA GPU; this machine has none")
    for item in items:
        if "cuda" in item.keywords:
            item.add_marker(no_gpu)
