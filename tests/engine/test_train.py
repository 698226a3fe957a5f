"""Training: the recipe's optimizer and schedule, the loss, exact resume, non-finite steps, DDP."""

from __future__ import annotations

import copy
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import transeg
from transeg.data.synthetic import write_synthetic_dataset
from transeg.engine.checkpoint import list_checkpoints
from transeg.engine.distributed import DistInfo
from transeg.engine.losses import segmentation_loss
from transeg.engine.optim import build_optimizer, lr_factor, param_groups
from transeg.engine.recipe import OptimizerSection, ScheduleSection, parse_config
from transeg.engine.train import Trainer, train
from transeg.errors import TransegError


@pytest.fixture(scope="module")
def scenes(tmp_path_factory) -> Path:
    return write_synthetic_dataset(tmp_path_factory.mktemp("scenes"), num_train=8, num_val=3, size=(64, 64))


def tiny_config(root: Path, out: Path, **sections):
    data = {"model": {"name": "segformer-b0"},
            "data": {"dataset": "folder", "root": str(root), "crop_size": [64, 64], "scale": [64, 64],
                     "test_scale": None, "num_workers": 0},
            "optimizer": {"lr": 1e-3},
            "schedule": {"iterations": 6, "warmup_iters": 2},
            "train": {"batch_size": 2, "log_interval": 1, "eval_interval": 6, "checkpoint_interval": 3,
                      "keep_checkpoints": 5},
            "output_dir": str(out)}
    for name, values in sections.items():
        data[name] = {**data.get(name, {}), **values}
    return parse_config(data)


# --------------------------------------------------------------------------- recipe
def test_param_groups_follow_the_official_paramwise_cfg():
    model = transeg.create_model("segformer-b0", num_classes=3)
    groups = param_groups(model, OptimizerSection(lr=6e-5, weight_decay=0.01))
    by_param = {id(p): (g["lr"], g["weight_decay"]) for g in groups for p in g["params"]}
    named = dict(model.named_parameters())
    assert by_param[id(named["encoder.stages.0.blocks.0.attn.q.weight"])] == (6e-5, 0.01)
    assert by_param[id(named["encoder.stages.0.blocks.0.attn.q.bias"])] == (6e-5, 0.01)  # biases decay
    assert by_param[id(named["encoder.stages.1.blocks.0.norm1.weight"])] == (6e-5, 0.0)  # LayerNorm
    assert by_param[id(named["encoder.stages.3.norm.bias"])] == (6e-5, 0.0)
    assert by_param[id(named["decoder.fuse.weight"])] == pytest.approx((6e-4, 0.01))  # head lr x10
    assert by_param[id(named["decoder.norm.weight"])] == pytest.approx((6e-4, 0.01))  # head BN decays
    assert sum(len(g["params"]) for g in groups) == len(named)


def test_warmup_then_poly_matches_mmcv():
    cfg = ScheduleSection(iterations=160_000, warmup_iters=1500, warmup_ratio=1e-6, power=1.0)
    assert lr_factor(0, 6e-5, cfg) == pytest.approx(1e-6)
    # mmcv 0.x: the warm-up ramp multiplies the poly value computed over the whole run
    poly = 1 - 750 / 160_000
    assert lr_factor(750, 6e-5, cfg) == pytest.approx(poly * (1 - 0.5 * (1 - 1e-6)))
    assert lr_factor(80_000, 6e-5, cfg) == pytest.approx(0.5)
    assert lr_factor(160_000, 6e-5, cfg) == 0.0
    sgd = ScheduleSection(iterations=100, warmup_iters=0, power=0.9, min_lr=1e-5)
    assert lr_factor(50, 1e-3, sgd) * 1e-3 == pytest.approx((1e-3 - 1e-5) * 0.5**0.9 + 1e-5)


def test_sgd_recipe():
    model = transeg.create_model("segformer-b0", num_classes=2)
    opt = build_optimizer(model, OptimizerSection(type="sgd", lr=1e-3, weight_decay=0.0, momentum=0.9))
    assert isinstance(opt, torch.optim.SGD) and opt.defaults["momentum"] == 0.9


def test_loss_ignores_255_and_handles_all_ignored():
    logits = torch.randn(2, 3, 8, 8, requires_grad=True)
    labels = torch.randint(0, 3, (2, 32, 32))
    labels[0, :16] = 255
    up = torch.nn.functional.interpolate(logits, size=(32, 32), mode="bilinear", align_corners=False)
    expected = torch.nn.functional.cross_entropy(up, labels, ignore_index=255)
    (expected_grad,) = torch.autograd.grad(expected, logits)
    for layout in (torch.contiguous_format, torch.channels_last):  # the decoders give either
        loss = segmentation_loss(logits.contiguous(memory_format=layout), labels)
        assert torch.allclose(loss, expected)
        (grad,) = torch.autograd.grad(loss, logits)
        assert torch.allclose(grad, expected_grad, atol=1e-7)
    empty = segmentation_loss(logits, torch.full((2, 32, 32), 255))
    assert empty.item() == 0.0
    empty.backward()


def test_binary_loss_is_sigmoid_cross_entropy():
    logits = torch.randn(1, 1, 16, 16)
    labels = torch.randint(0, 2, (1, 16, 16))
    expected = torch.nn.functional.binary_cross_entropy_with_logits(logits[:, 0], labels.float())
    assert torch.allclose(segmentation_loss(logits, labels), expected)


# --------------------------------------------------------------------------- runs
def _loss_on_training_images(model, dataset) -> float:
    """Eval-mode loss over the un-augmented training images: a fixed yardstick across weights."""
    from transeg.inference.modes import normalize

    model.eval()
    total = 0.0
    with torch.no_grad():
        for i in range(len(dataset)):
            sample = dataset.load(i)
            x = normalize(sample["image"], model.config.mean, model.config.std)
            total += segmentation_loss(model(x), torch.from_numpy(sample["label"]).long()[None]).item()
    return total / len(dataset)


def test_training_learns_and_writes_everything(scenes, tmp_path):
    cfg = tiny_config(scenes, tmp_path / "run", schedule={"iterations": 30, "warmup_iters": 3},
                      train={"batch_size": 4, "eval_interval": 30, "checkpoint_interval": 10, "keep_checkpoints": 2})
    trainer = Trainer(cfg)
    before = _loss_on_training_images(trainer.model, trainer.train_set)
    result = trainer.fit(show_progress=False)
    after = _loss_on_training_images(trainer.model, trainer.train_set)
    assert after < 0.8 * before, f"training loss on the training images went from {before:.3f} to {after:.3f}"
    assert result.iteration == 30 and result.best_miou is not None
    records = [json.loads(line) for line in (tmp_path / "run" / "log.jsonl").read_text().splitlines()]
    assert [r["iter"] for r in records if "loss" in r] == list(range(1, 31))
    assert [p.name for p in list_checkpoints(tmp_path / "run" / "checkpoints")] == ["iter_0000020.pt",
                                                                                     "iter_0000030.pt"]
    model = transeg.load_model(tmp_path / "run" / "checkpoints" / "iter_0000030.pt")
    final = transeg.load_model(tmp_path / "run" / "model.safetensors")
    assert all(torch.equal(v, final.state_dict()[k]) for k, v in model.state_dict().items())
    assert final.config.class_names[:2] == ("background", "disc") and final.config.palette is not None


def test_resume_reaches_the_same_weights(scenes, tmp_path):
    uninterrupted = train(tiny_config(scenes, tmp_path / "a"), show_progress=False)
    train(tiny_config(scenes, tmp_path / "b"), show_progress=False)
    (tmp_path / "b" / "checkpoints" / "iter_0000006.pt").unlink()  # as if killed after iteration 3
    resumed = Trainer(tiny_config(scenes, tmp_path / "b"))
    assert resumed.resume() and resumed.iteration == 3
    resumed.fit(show_progress=False)
    a = transeg.load_model(uninterrupted.output_dir / "model.safetensors").state_dict()
    b = transeg.load_model(tmp_path / "b" / "model.safetensors").state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a), "resumed run differs from the uninterrupted one"


def test_gradient_accumulation_and_bf16_run(scenes, tmp_path):
    cfg = tiny_config(scenes, tmp_path / "r", schedule={"iterations": 2, "warmup_iters": 0},
                      train={"batch_size": 4, "grad_accum": 2, "precision": "bf16", "eval_interval": 2})
    assert train(cfg, show_progress=False).iteration == 2


def test_non_finite_steps_are_skipped_then_stop(scenes, tmp_path):
    cfg = tiny_config(scenes, tmp_path / "n", train={"max_nonfinite_steps": 3})
    trainer = Trainer(cfg)
    with torch.no_grad():
        trainer.model.decoder.classifier.bias.fill_(math.nan)
    before = trainer.model.decoder.fuse.weight.clone()
    with pytest.raises(TransegError, match="3 steps in a row had a non-finite loss"):
        trainer.fit(show_progress=False)
    assert trainer.nonfinite_total == 3
    assert torch.equal(trainer.model.decoder.fuse.weight, before), "a non-finite step was applied"


def test_batch_of_one_with_batchnorm_warns(scenes, tmp_path):
    cfg = tiny_config(scenes, tmp_path / "w", schedule={"iterations": 1, "warmup_iters": 0},
                      train={"batch_size": 1, "eval_interval": 1})
    with pytest.warns(UserWarning, match="batch of 1 image per process with BatchNorm"):
        train(cfg, show_progress=False)


def test_ddp_two_processes_match_one(scenes, tmp_path):
    """torchrun with 2 CPU processes (gloo, synchronised BatchNorm) = 1 process, same global batch."""
    common = ["--set", "model.drop_path_rate=0", "--set", "model.decoder_dropout=0",
              "--set", "schedule.iterations=3", "--set", "train.batch_size=4", "--set", "train.eval_interval=3"]
    config = tmp_path / "c.yaml"
    config.write_text(f"data: {{dataset: folder, root: {scenes}, crop_size: [64, 64], scale: [64, 64], "
                      f"test_scale: null, num_workers: 0}}\nschedule: {{warmup_iters: 1}}\n"
                      # SGD: Adam's normalisation would magnify float rounding in near-zero gradients
                      "optimizer: {type: sgd, lr: 0.01, weight_decay: 0.0}\n")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    subprocess.run([sys.executable, "-m", "transeg", "train", str(config), *common,
                    "--set", f"output_dir={tmp_path / 'one'}"], check=True, env=env, capture_output=True)
    subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--master_port=29531",
                    "-m", "transeg", "train", str(config), *common, "--set", f"output_dir={tmp_path / 'two'}"],
                   check=True, env=env, capture_output=True)
    one = transeg.load_model(tmp_path / "one" / "model.safetensors").state_dict()
    two = transeg.load_model(tmp_path / "two" / "model.safetensors").state_dict()
    worst = max((one[k].float() - two[k].float()).abs().max().item() for k in one)
    assert worst < 1e-4, f"max weight difference {worst:.2e}"
    assert not torch.equal(one["decoder.norm.running_mean"], torch.zeros_like(one["decoder.norm.running_mean"]))


def test_dist_info_defaults():
    info = DistInfo()
    assert info.is_main and not info.distributed


def test_auxiliary_losses_use_the_model_weights_unless_overridden():
    from transeg.engine.loss_spec import build_loss
    from transeg.models.outputs import SegOutput

    logits, aux = torch.randn(1, 3, 8, 8), torch.randn(1, 3, 8, 8)
    labels = torch.randint(0, 3, (1, 16, 16))
    out = SegOutput(logits, {"attn": aux}, {"attn": 0.4})
    main, extra = segmentation_loss(logits, labels), segmentation_loss(aux, labels)
    loss, parts = build_loss().with_parts(out, labels)  # no loss list: the cross-entropy
    assert torch.allclose(loss, main + 0.4 * extra)
    assert set(parts) == {"loss_seg", "loss_attn"}
    assert torch.allclose(build_loss(aux_weights={"attn": 0.0})(out, labels), main)


def test_adamw_is_fused_and_steps_as_the_reference():
    """The fused AdamW the recipes get moves the weights as PyTorch's per-tensor AdamW, over the
    SegFormer parameter groups (decoder lr x10, LayerNorms without decay)."""
    torch.manual_seed(0)
    model = transeg.create_model("segformer-b0", num_classes=3)
    reference, initial = copy.deepcopy(model), copy.deepcopy(model)
    cfg = OptimizerSection(type="adamw", lr=1e-3, weight_decay=0.01, head_lr_mult=10.0, norm_decay_mult=0.0)
    fused = build_optimizer(model, cfg)
    plain = torch.optim.AdamW(param_groups(reference, cfg), lr=cfg.lr, betas=cfg.betas, foreach=False)
    assert fused.defaults["fused"] and not plain.defaults["fused"]
    for _ in range(3):  # the same gradients on both sides (recomputed ones would drift apart chaotically)
        grads = [torch.randn_like(p) for p in model.parameters()]
        for net, opt in ((model, fused), (reference, plain)):
            for p, g in zip(net.parameters(), grads, strict=True):
                p.grad = g.clone()
            opt.step()
    for (name, got), want, start in zip(model.named_parameters(), reference.parameters(), initial.parameters(),
                                        strict=True):
        assert not torch.equal(got, start), name
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6, msg=name)


@pytest.mark.parametrize("retain", [True, False])
def test_steps_run_inside_the_retained_heap_unless_switched_off(scenes, tmp_path, monkeypatch, retain):
    import contextlib

    import transeg.engine.train as train_module

    state = {"inside": None, "steps_inside": 0}

    @contextlib.contextmanager
    def spy(enabled=True):
        state["inside"] = enabled
        yield
        state["inside"] = None

    monkeypatch.setattr(train_module, "retained_heap", spy)
    trainer = Trainer(tiny_config(scenes, tmp_path / "h", schedule={"iterations": 2, "warmup_iters": 0},
                                  train={"retain_heap": retain, "eval_interval": 2}))
    step = trainer._step

    def counted(*args):
        state["steps_inside"] += state["inside"] is retain
        return step(*args)

    trainer._step = counted
    trainer.fit(show_progress=False)
    assert state["steps_inside"] == 2 and state["inside"] is None
