"""Training configs: typed, validated, one-line errors naming the key; bases and --set overrides."""

from __future__ import annotations

import pytest

from transeg.data.synthetic import write_synthetic_dataset
from transeg.engine.recipe import build_dataset_from_config, load_config, parse_config
from transeg.errors import TransegError

MINIMAL = "data: {dataset: camvid, root: /data/camvid}\n"


def write(tmp_path, text: str, name: str = "c.yaml"):
    path = tmp_path / name
    path.write_text(text)
    return path


def test_defaults_are_the_segformer_recipe(tmp_path):
    cfg = load_config(write(tmp_path, MINIMAL))
    assert (cfg.optimizer.type, cfg.optimizer.lr, cfg.optimizer.weight_decay) == ("adamw", 6e-5, 0.01)
    assert (cfg.optimizer.head_lr_mult, cfg.optimizer.norm_decay_mult) == (10.0, 0.0)
    assert (cfg.schedule.warmup_iters, cfg.schedule.warmup_ratio, cfg.schedule.power) == (1500, 1e-6, 1.0)
    assert (cfg.schedule.iterations, cfg.train.batch_size) == (160_000, 16)


def test_base_and_overrides(tmp_path):
    write(tmp_path, MINIMAL + "train: {batch_size: 8, seed: 3}\n", "base.yaml")
    path = write(tmp_path, "base: base.yaml\ntrain: {batch_size: 4}\n")
    cfg = load_config(path, ["optimizer.lr=0.01", "data.crop_size=[64, 96]", "eval.mode=whole"])
    assert (cfg.train.batch_size, cfg.train.seed, cfg.optimizer.lr) == (4, 3, 0.01)
    assert cfg.data.crop_size == (64, 96)


@pytest.mark.parametrize(
    ("text", "overrides", "expected"),
    [
        (MINIMAL + "train: {batch_sise: 2}\n", [], r"c.yaml: train.batch_sise: unknown key"),
        (MINIMAL + "optimizer: {lr: -1}\n", [], r"optimizer.lr: Input should be greater than 0 \(got -1\)"),
        (MINIMAL + "optimizer: {lr: fast}\n", [], r"optimizer.lr: .*valid number"),
        (MINIMAL, ["data.crop_size=[16, 16]"], r"data: crop_size \(16, 16\) is below 32"),
        (MINIMAL, ["eval.mode=slide"], r"eval: mode 'slide' needs crop and stride"),
        (MINIMAL, ["train.batch_size=6", "train.grad_accum=4"], r"not a multiple of train.grad_accum"),
        (MINIMAL, ["optimizer.type=lamb"], r"optimizer.type: Input should be 'adamw' or 'sgd'"),
        ("model: {name: x}\n", [], r"c.yaml: data: Field required"),
        (MINIMAL + "train: [1, 2\n", [], r"c.yaml: line \d+, column \d+ invalid YAML"),
        ("- a\n- b\n", [], r"must be a mapping"),
        (MINIMAL, ["nonsense"], r"--set 'nonsense': expected key=value"),
        (MINIMAL + "base: missing.yaml\n", [], r"missing.yaml: no such config file"),
    ],
)
def test_bad_configs_name_the_key(tmp_path, text, overrides, expected):
    with pytest.raises(TransegError, match=expected):
        load_config(write(tmp_path, text), overrides)


def test_every_recipe_in_configs_validates():
    from pathlib import Path

    recipes = sorted((Path(__file__).resolve().parents[2] / "configs").rglob("*.yaml"))
    assert len(recipes) >= 19
    for path in recipes:
        if path.parent.name != "_base":
            cfg = load_config(path)
            assert cfg.model.name.startswith(("segformer-", "segmenter-", "segdeformer-")), path


def test_dataset_from_config_uses_its_name_root_split_and_options(tmp_path):
    root = write_synthetic_dataset(tmp_path / "d", num_train=3, num_val=2, size=(32, 32))
    (tmp_path / "two.yaml").write_text("classes: [a, b]\n")
    data = parse_config({"data": {"dataset": "folder", "root": str(root),
                                  "options": {"classes_yaml": str(tmp_path / "two.yaml")}}}).data
    val = build_dataset_from_config(data, "val")
    assert len(val) == 2 and tuple(val.classes) == ("a", "b")
    assert len(build_dataset_from_config(data, "train")) == 3


def test_a_check_across_sections_names_its_keys_only():
    with pytest.raises(TransegError) as caught:
        parse_config({"data": {"dataset": "folder", "root": "/x"}, "schedule": {"iterations": 1}}, "c.yaml")
    assert str(caught.value) == "c.yaml: schedule.warmup_iters must be below schedule.iterations"
    with pytest.raises(TransegError) as caught:
        parse_config({"data": {"dataset": "folder", "root": "/x", "ratio_range": [2, 1]}}, "c.yaml")
    assert str(caught.value) == "c.yaml: data: ratio_range (2.0, 1.0) is not (low, high)"
