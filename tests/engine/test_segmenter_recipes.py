"""Every Segmenter recipe in configs/segmenter/ against the paper (Strudel et al., 2021), transcribed
below with its section or table; where the paper is silent, the official code (rstrudel/segmenter:
segm/config.yml, segm/train.py, segm/data/), cited as "official"."""

from __future__ import annotations

from pathlib import Path

import pytest

from transeg.data.labels import ADE20K_CLASSES, CITYSCAPES_CLASSES, PASCAL_CONTEXT60_CLASSES
from transeg.engine.recipe import TrainConfig, load_config
from transeg.engine.training_model import training_model_config

RECIPES = Path(__file__).resolve().parents[2] / "configs" / "segmenter"

# Per dataset: Sec. 4.2 "Data augmentation" (crop), Sec. 4.2 "Optimization" (lr, iterations, batch),
# Sec. 4.1 (classes; Pascal Context: "59 semantic classes plus a background class", trained as 60
# classes by the official code: n_cls = 60, reduce_zero_label = False), official segm/config.yml
# (image scale, sliding window and stride).
PAPER = {
    "ade20k": dict(dataset="ade20k", classes=150, crop=512, lr=1e-3, iterations=160_000, batch=8,
                   scale=512, window=512, stride=512),
    "pascal-context": dict(dataset="pascal_context60", classes=60, crop=480, lr=1e-3, iterations=80_000, batch=16,
                           scale=520, window=480, stride=320),
    "cityscapes": dict(dataset="cityscapes", classes=19, crop=768, lr=1e-2, iterations=80_000, batch=8,
                       scale=1024, window=768, stride=512),
}
CLASS_NAMES = {"ade20k": ADE20K_CLASSES, "pascal_context60": PASCAL_CONTEXT60_CLASSES,
               "cityscapes": CITYSCAPES_CLASSES}
# Sec. 4.2 "Data augmentation": "we train our largest model Seg-L-Mask/16 with a resolution of 640x640"
# on ADE20K; Sec. 4.2 "Inference": a sliding window "with a resolution matching the training size".
EXCEPTIONS = {("segmenter-l16-mask", "ade20k"): dict(crop=640, scale=640, window=640, stride=640)}
# Sec. 4.3 "Decoder variants": "The mask transformer has 2 layers"; Sec. 4.4 "Cityscapes": Seg-L-Mask/16
# has "only one layer in the decoder".
DECODER_LAYERS = {("segmenter-l16-mask", "cityscapes"): 1}
# Sec. 4.2 "ImageNet pre-training": ViT (AugReg, timm) pre-trained at 224 and fine-tuned at 384, except
# ViT-B/8 (224); Seg-B-dagger/16 starts from DeiT-B (distilled, 384: official config.yml).
ENCODER_WEIGHTS = {
    "t16": "vit_tiny_patch16_384", "s16": "vit_small_patch16_384", "b16": "vit_base_patch16_384",
    "l16": "vit_large_patch16_384", "b8": "vit_base_patch8_224", "b16-deit": "deit_base_distilled_patch16_384",
}


def _recipes() -> list[Path]:
    # the CamVid recipe is not the paper's: it trains from random weights, sized for a CPU
    return sorted(p for p in RECIPES.glob("segmenter-*.yaml") if "camvid" not in p.name)


def _dataset_of(path: Path) -> str:
    return next(d for d in PAPER if path.stem.endswith(d))


def test_every_paper_dataset_and_variant_has_a_recipe():
    names = {p.stem for p in _recipes()}
    variants = ("t16-mask", "s16-linear", "s16-mask", "b16-mask", "b16-mask-deit", "b8-mask", "l16-mask")
    assert names == {f"segmenter-{v}-{d}" for v in variants for d in PAPER}


@pytest.mark.parametrize("path", _recipes(), ids=lambda p: p.stem)
def test_recipe_follows_the_paper(path):
    cfg: TrainConfig = load_config(path)
    dataset = _dataset_of(path)
    want = {**PAPER[dataset], **EXCEPTIONS.get((cfg.model.name, dataset), {})}
    crop = want["crop"]

    assert cfg.data.dataset == want["dataset"]
    assert cfg.data.crop_size == (crop, crop)
    assert cfg.data.scale == (2048, want["scale"])  # official im_size; mmseg Resize(2048, im_size)
    assert cfg.data.ratio_range == (0.5, 2.0)  # Sec. 4.2: "a ratio between 0.5 and 2.0"
    assert cfg.model.image_size == crop  # official: image_size = (crop_size, crop_size)
    assert cfg.model.encoder_weights == f"pretrained/{ENCODER_WEIGHTS[_variant(cfg.model.name)]}.pth"

    # Sec. 4.2 "Optimization": SGD, weight decay 0, poly with power 0.9; official: momentum 0.9,
    # min_lr 1e-5, no warm-up, one lr for all parameters.
    assert (cfg.optimizer.type, cfg.optimizer.lr, cfg.optimizer.weight_decay) == ("sgd", want["lr"], 0.0)
    assert (cfg.optimizer.momentum, cfg.optimizer.head_lr_mult) == (0.9, 1.0)
    assert (cfg.schedule.iterations, cfg.schedule.power) == (want["iterations"], 0.9)
    assert (cfg.schedule.warmup_iters, cfg.schedule.min_lr) == (0, 1e-5)
    assert cfg.train.batch_size == want["batch"]

    # Sec. 4.2 "Inference": sliding windows at the training size; official window stride
    assert cfg.eval.mode == "slide"
    assert cfg.eval.crop == (want["window"], want["window"])
    assert cfg.eval.stride == (want["stride"], want["stride"])
    # official: test images resized as the training images (short side im_size); segm/model/utils.py
    # resize() then enlarges only an image smaller than the window
    assert cfg.data.test_scale == (2048, want["scale"])

    config = training_model_config(cfg.model, CLASS_NAMES[cfg.data.dataset])
    encoder = config.encoder_config
    assert config.num_classes == want["classes"]
    assert encoder.image_size == crop and encoder.grid == (crop // encoder.patch_size,) * 2
    # Table 2 and Sec. 4.3 "Regularization": stochastic depth 0.1, no dropout
    assert (encoder.drop_path_rate, encoder.dropout) == (0.1, 0.0)
    if config.decoder == "mask_transformer":
        assert config.decoder_config.n_layers == DECODER_LAYERS.get((cfg.model.name, dataset), 2)
        assert config.decoder_config.dropout == 0.1  # official config.yml: mask_transformer dropout 0.1
    else:
        assert cfg.model.name.endswith("-linear")


def _variant(name: str) -> str:
    """``segmenter-b16-mask-deit`` -> ``b16-deit``."""
    parts = name.removeprefix("segmenter-").split("-")
    return "-".join([parts[0], *parts[2:]])
