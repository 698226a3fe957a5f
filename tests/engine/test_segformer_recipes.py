"""Every SegFormer recipe in configs/segformer/ against the paper's implementation details (Xie et al.,
2021, Sec. 4.1 "Implementation details"), transcribed below; where the paper is silent, the official
code (NVlabs/SegFormer local_configs), cited as "official"."""

from __future__ import annotations

from pathlib import Path

import pytest

from transeg.engine.recipe import TrainConfig, load_config

RECIPES = Path(__file__).resolve().parents[2] / "configs" / "segformer"

# Sec. 4.1: crops 512 / 1024 / 512 (ADE20K, Cityscapes, COCO-Stuff), 640 for B5 on ADE20K; AdamW,
# initial lr 6e-5, poly schedule with factor 1.0; 160K iterations on ADE20K and Cityscapes, 80K on
# COCO-Stuff; batch 16 for ADE20K and COCO-Stuff, 8 for Cityscapes; random resize 0.5-2.0 and flip;
# evaluation: short side rescaled to the crop (ADE20K, COCO-Stuff), sliding 1024x1024 windows on
# Cityscapes. Encoder pre-trained on ImageNet-1K, decoder from random initialisation.
PAPER = {
    "ade20k": dict(dataset="ade20k", crop=512, iterations=160_000, batch=16, mode="whole"),
    "cityscapes": dict(dataset="cityscapes", crop=1024, iterations=160_000, batch=8, mode="slide"),
    "coco-stuff": dict(dataset="coco_stuff164k", crop=512, iterations=80_000, batch=16, mode="whole"),
}
EXCEPTIONS = {("b5", "ade20k"): dict(crop=640)}  # "crop size to 640x640 on ADE20K for our largest model B5"
VARIANTS = ("b0", "b1", "b2", "b3", "b4", "b5")


def _recipes() -> list[Path]:
    # the CamVid recipe is not the paper's: it trains from random weights, sized for a CPU
    return sorted(p for p in RECIPES.glob("segformer-*.yaml") if "camvid" not in p.name)


def test_every_paper_dataset_and_variant_has_a_recipe():
    assert {p.stem for p in _recipes()} == {f"segformer-{v}-{d}" for v in VARIANTS for d in PAPER}


@pytest.mark.parametrize("path", _recipes(), ids=lambda p: p.stem)
def test_recipe_follows_the_paper(path: Path):
    variant, dataset = path.stem.split("-", 2)[1], path.stem.split("-", 2)[2]
    paper = {**PAPER[dataset], **EXCEPTIONS.get((variant, dataset), {})}
    cfg: TrainConfig = load_config(path)
    assert cfg.model.name == f"segformer-{variant}"
    assert cfg.model.encoder_weights == f"pretrained/mit_{variant}.pth"  # ImageNet-1K MiT
    assert cfg.data.dataset == paper["dataset"]
    assert tuple(cfg.data.crop_size) == (paper["crop"], paper["crop"])
    assert tuple(cfg.data.ratio_range) == (0.5, 2.0)
    assert cfg.optimizer.type == "adamw" and cfg.optimizer.lr == pytest.approx(6e-5)
    assert cfg.schedule.power == 1.0 and cfg.schedule.iterations == paper["iterations"]
    assert cfg.train.batch_size == paper["batch"]
    assert cfg.eval.mode == paper["mode"]
    if paper["mode"] == "slide":
        assert tuple(cfg.eval.crop) == (1024, 1024)
    else:  # short side rescaled to the crop, ratio kept
        assert min(cfg.data.test_scale) == paper["crop"]
    # official: weight decay 0.01, decoder lr x10, 1500-iteration warm-up, MMSegmentation's loss averaging
    assert cfg.optimizer.weight_decay == pytest.approx(0.01) and cfg.optimizer.head_lr_mult == 10.0
    assert cfg.schedule.warmup_iters == 1500
    assert cfg.train.loss_average == "all"
