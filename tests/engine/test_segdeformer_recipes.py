"""The SegDeformer recipes in configs/segdeformer/ against the paper (Shi et al., ECCV 2022), and the
Swin / DeiT parameter groups they select."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn

from transeg.engine.optim import param_groups
from transeg.engine.recipe import OptimizerSection, load_config
from transeg.models.zoo import ZOO

CONFIGS = Path(__file__).parents[2] / "configs" / "segdeformer"

# Sec. 4.1, "Implementation details": AdamW, initial lr 6e-5, "poly" schedule, 160k iterations for
# every model; batch 16 and 512 x 512 crops on ADE20K and COCO-Stuff, batch 8 and 1024 x 1024 on
# Cityscapes; evaluation keeps the aspect ratio with the short side at the crop size, and adds the
# sliding-window test on COCO-Stuff and Cityscapes.
DATASETS = {  # dataset: (crop, batch, eval mode)
    "ade20k": (512, 16, "whole"),
    "coco_stuff164k": (512, 16, "slide"),
    "cityscapes": (1024, 8, "slide"),
}
# The rows each recipe reproduces: (dataset, zoo model, table). † UperNet, ★/* efficient attention.
RECIPES = {
    "segdeformer-deit-s16-ade20k": ("ade20k", "segdeformer-deit-s16", "Table 7, Deit-S + SegDeformer"),
    "segdeformer-deit-s16-uper-ade20k": ("ade20k", "segdeformer-deit-s16-uper", "Table 7, Deit-S† + SegDeformer"),
    "segdeformer-deit-b16-uper-ade20k": ("ade20k", "segdeformer-deit-b16-uper", "Table 1, Deit-B† + SegDeformer"),
    "segdeformer-swin-s-ade20k": ("ade20k", "segdeformer-swin-s", "Table 7, Swin-S + SegDeformer"),
    "segdeformer-swin-s-uper-ade20k": ("ade20k", "segdeformer-swin-s-uper", "Table 7, Swin-S† + SegDeformer"),
    "segdeformer-swin-s-uper-eff-ade20k": ("ade20k", "segdeformer-swin-s-uper-eff", "Table 7, Swin-S†★"),
    "segdeformer-swin-l-uper-ade20k": ("ade20k", "segdeformer-swin-l-uper", "Table 1, Swin-L†‡ 512"),
    "segdeformer-mit-b2-eff-ade20k": ("ade20k", "segdeformer-mit-b2-eff", "Table 7, SegFormer-B2★"),
    "segdeformer-deit-b16-uper-coco-stuff": ("coco_stuff164k", "segdeformer-deit-b16-uper", "Table 2, Deit-B†"),
    "segdeformer-mit-b5-coco-stuff": ("coco_stuff164k", "segdeformer-mit-b5", "Table 2, SegFormer-B5"),
    "segdeformer-swin-l-uper-coco-stuff": ("coco_stuff164k", "segdeformer-swin-l-uper", "Table 2, Swin-L†‡"),
    "segdeformer-deit-b16-uper-cityscapes": ("cityscapes", "segdeformer-deit-b16-uper", "Table 3, Deit-B†"),
    "segdeformer-mit-b5-eff-cityscapes": ("cityscapes", "segdeformer-mit-b5-eff", "Table 3, SegFormer-B5*"),
    "segdeformer-swin-l-uper-eff-cityscapes": ("cityscapes", "segdeformer-swin-l-uper-eff", "Table 3, Swin-L†‡*"),
}


@pytest.mark.parametrize("recipe", sorted(RECIPES))
def test_recipe_follows_the_implementation_details(recipe):
    dataset, model, _row = RECIPES[recipe]
    cfg = load_config(CONFIGS / f"{recipe}.yaml")
    crop, batch, mode = DATASETS[dataset]
    assert (cfg.data.dataset, cfg.model.name) == (dataset, model)
    assert cfg.data.crop_size == (crop, crop) and cfg.train.batch_size == batch
    assert cfg.data.test_scale is not None and min(cfg.data.test_scale) == crop  # short side = crop size
    assert cfg.eval.mode == mode
    if mode == "slide":
        assert cfg.eval.crop == (crop, crop)
    assert (cfg.optimizer.type, cfg.optimizer.lr) == ("adamw", 6e-5)
    assert cfg.schedule.iterations == 160_000 and cfg.schedule.min_lr == 0.0
    assert cfg.model.num_classes is None  # the dataset's: 150, 171, 19
    # Swin and DeiT encoders: MMSegmentation's Swin / ViT UperNet parameter groups; MiT: SegFormer's
    swin_groups = ZOO[model].encoder in ("swin", "vit")
    assert cfg.optimizer.param_groups == ("swin" if swin_groups else "segformer")
    assert cfg.optimizer.head_lr_mult == (1.0 if swin_groups else 10.0)


def test_every_table_row_has_a_recipe():
    """Tables 1-3 and 7's SegDeformer rows: a recipe each (MiT-B1/B2/B5 on ADE20K: earlier recipes)."""
    names = {p.stem for p in CONFIGS.glob("*.yaml")}
    assert set(RECIPES) <= names
    assert {"segdeformer-mit-b1-ade20k", "segdeformer-mit-b2-ade20k", "segdeformer-mit-b5-ade20k"} <= names


class _Tiny(nn.Module):
    """Names as transeg's Swin and ViT encoders give them, and a decoder."""

    def __init__(self) -> None:
        super().__init__()
        self.encoder = nn.Module()
        self.encoder.relative_position_bias_table = nn.Parameter(torch.zeros(3))
        self.encoder.pos_embed = nn.Parameter(torch.zeros(3))
        self.encoder.cls_token = nn.Parameter(torch.zeros(3))
        self.encoder.norm = nn.LayerNorm(3)
        self.encoder.proj = nn.Linear(3, 3)
        self.decoder = nn.Module()
        self.decoder.conv = nn.Conv2d(3, 3, 1)
        self.decoder.bn = nn.BatchNorm2d(3)


def _decay_and_lr(model: nn.Module, cfg: OptimizerSection) -> dict[str, tuple[float, float]]:
    by_id = {id(p): (g["weight_decay"], g["lr"]) for g in param_groups(model, cfg) for p in g["params"]}
    return {name: by_id[id(p)] for name, p in model.named_parameters()}


def test_swin_parameter_groups():
    model = _Tiny()
    swin = _decay_and_lr(model, OptimizerSection(lr=1.0, weight_decay=0.01, head_lr_mult=1.0, param_groups="swin"))
    for name in ("encoder.relative_position_bias_table", "encoder.pos_embed", "encoder.cls_token",
                 "encoder.norm.weight", "encoder.norm.bias"):
        assert swin[name] == (0.0, 1.0), name
    for name in ("encoder.proj.weight", "decoder.conv.weight", "decoder.bn.weight"):
        assert swin[name] == (0.01, 1.0), name
    segformer = _decay_and_lr(model, OptimizerSection(lr=1.0, weight_decay=0.01))
    assert segformer["encoder.relative_position_bias_table"] == (0.01, 1.0)  # decayed outside "swin"
    assert segformer["encoder.norm.weight"] == (0.0, 1.0)
    assert segformer["decoder.conv.weight"] == (0.01, 10.0)
