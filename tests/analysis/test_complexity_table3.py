"""SegFormer Table 3's rows as zoo models: decoder parameters and GFLOPs (multiply-adds, 512x512,
150 classes) of Swin-T + MLP, ViT-L + MLP and MiT-B5 + UperNet, counted on the whole model."""

from __future__ import annotations

import pytest
import torch

from transeg.analysis.complexity import count_macs, count_parameters
from transeg.models.factory import build_model
from transeg.models.zoo import model_config

# name: (decoder GFLOPs, decoder params M) of Table 3
TABLE3 = {
    "segformer-swin-t": (42.8, 3.6),
    "segformer-vit-l16": (0.6, 0.6),
    "upernet-mit-b5": (210.7, 29.7),
}


@pytest.mark.parametrize("name", list(TABLE3))
def test_table3_rows(name):
    """The decoder's share of the whole model's MACs (the model's minus the encoder's), and its
    parameters without UperNet's auxiliary FCN head, which the table leaves out."""
    with torch.device("meta"):
        model = build_model(model_config(name))
    aux = sum(p.numel() for p in model.decoder.aux.parameters()) if hasattr(model.decoder, "aux") else 0
    params = (count_parameters(model)["decoder"] - aux) / 1e6
    gmacs = (count_macs(model, (512, 512)) - count_macs(model.encoder, (512, 512))) / 1e9
    paper_gmacs, paper_params = TABLE3[name]
    assert params == pytest.approx(paper_params, rel=0.02)
    assert gmacs == pytest.approx(paper_gmacs, rel=0.03)


def test_vit_l_mlp_decodes_the_last_map_alone():
    """0.6 M / 0.6 G rule out the C = 768 of the MiT rows: the last ViT-L map at C = 512, no fuse conv."""
    config = model_config("segformer-vit-l16")
    assert config.encoder_config.out_indices == (-1,) and config.decoder_config.embed_dim == 512
    with torch.device("meta"):
        model = build_model(config)
    assert model.decoder.fuse is None
