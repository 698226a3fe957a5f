"""The ``loss:`` terms against direct formulas written pixel by pixel (values and autograd gradients),
hand-checked cases, the config list, and 2 gloo processes giving the gradient of 1."""

from __future__ import annotations

import math
import os
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

import transeg
from transeg.data.class_weights import inverse_log_weights
from transeg.engine.distributed import DistInfo
from transeg.engine.loss_spec import build_loss
from transeg.engine.recipe import parse_config
from transeg.errors import TransegError
from transeg.models.outputs import SegOutput

GEN = torch.Generator().manual_seed(0)
LOGITS = torch.randn(2, 3, 4, 5, generator=GEN)  # (B, K, H, W)
LABELS = torch.randint(0, 3, (2, 4, 5), generator=GEN)
LABELS[0, 0, :3] = 255
LABELS[1, 2, 1] = 255


def _pixels(labels: torch.Tensor) -> list[tuple[int, int, int]]:
    """(b, y, x) of every labelled pixel."""
    return [tuple(idx) for idx in (labels != 255).nonzero().tolist()]


def _softmax_at(z: torch.Tensor, b: int, y: int, x: int) -> torch.Tensor:
    e = torch.exp(z[b, :, y, x])
    return e / e.sum()


def _ref_ce(z, labels, weight=None):
    total = 0.0
    for b, y, x in _pixels(labels):
        c = int(labels[b, y, x])
        total = total - (1.0 if weight is None else weight[c]) * torch.log(_softmax_at(z, b, y, x)[c])
    return total / len(_pixels(labels))


def _ref_focal(z, labels, gamma):
    total = 0.0
    for b, y, x in _pixels(labels):
        p = _softmax_at(z, b, y, x)[int(labels[b, y, x])]
        total = total - (1 - p) ** gamma * torch.log(p)
    return total / len(_pixels(labels))


def _ref_dice(z, labels, smooth):
    scores = []
    for c in range(z.shape[1]):
        inter = p_sum = t_sum = 0.0
        for b, y, x in _pixels(labels):
            p, t = _softmax_at(z, b, y, x)[c], float(labels[b, y, x] == c)
            inter, p_sum, t_sum = inter + p * t, p_sum + p, t_sum + t
        scores.append((2 * inter + smooth) / (p_sum + t_sum + smooth))
    return 1 - sum(scores) / len(scores)


def _ref_lovasz(z, labels):
    """The Lovász extension of |M| / |fg ∪ M| (Berman et al. eq. 9), the sets built explicitly."""
    pixels = _pixels(labels)
    losses = []
    for c in range(z.shape[1]):
        fg = {i for i, (b, y, x) in enumerate(pixels) if labels[b, y, x] == c}
        if not fg:
            continue
        errors = [abs(float(i in fg) - _softmax_at(z, *pixel)[c]) for i, pixel in enumerate(pixels)]
        order = sorted(range(len(pixels)), key=lambda i: -float(errors[i].detach()))
        loss, previous = 0.0, 0.0
        for j in range(1, len(order) + 1):
            mistakes = set(order[:j])
            delta = len(mistakes) / len(fg | mistakes)
            loss = loss + errors[order[j - 1]] * (delta - previous)
            previous = delta
        losses.append(loss)
    return sum(losses) / len(losses)


def _grads(fn, logits=LOGITS):
    z = logits.clone().requires_grad_(True)
    value = fn(z)
    value.backward()
    return value.detach(), z.grad


@pytest.mark.parametrize(("spec", "reference"), [
    ({"type": "cross_entropy"}, lambda z: _ref_ce(z, LABELS)),
    ({"type": "cross_entropy", "class_weight": [0.5, 2.0, 1.0]}, lambda z: _ref_ce(z, LABELS, [0.5, 2.0, 1.0])),
    ({"type": "focal", "gamma": 2.0}, lambda z: _ref_focal(z, LABELS, 2.0)),
    ({"type": "focal", "gamma": 0.0}, lambda z: _ref_ce(z, LABELS)),  # γ = 0 is cross-entropy
    ({"type": "dice", "smooth": 1.0}, lambda z: _ref_dice(z, LABELS, 1.0)),
    ({"type": "lovasz"}, lambda z: _ref_lovasz(z, LABELS)),
    ({"type": "ohem_cross_entropy", "thresh": 1.0, "min_kept": 0}, lambda z: _ref_ce(z, LABELS)),  # keeps all
], ids=["ce", "ce-class-weight", "focal", "focal-gamma0", "dice", "lovasz", "ohem-keep-all"])
def test_term_matches_its_formula_values_and_gradients(spec, reference):
    loss = build_loss([{**spec, "weight": 1.0}])
    got, got_grad = _grads(lambda z: loss(z, LABELS))
    want, want_grad = _grads(reference)
    torch.testing.assert_close(got, want.float(), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(got_grad, want_grad, rtol=1e-4, atol=1e-6)
    assert torch.all(got_grad.permute(0, 2, 3, 1)[LABELS == 255] == 0)  # ignored pixels get no gradient


def test_weights_add_terms():
    both = build_loss([{"type": "cross_entropy", "weight": 0.3}, {"type": "dice", "weight": 2.0}])
    ce, dc = build_loss([{"type": "cross_entropy"}]), build_loss([{"type": "dice"}])
    torch.testing.assert_close(both(LOGITS, LABELS), 0.3 * ce(LOGITS, LABELS) + 2.0 * dc(LOGITS, LABELS))


def test_focal_by_hand():
    """One pixel, logits (ln 3, 0): p_t = 3/4 for class 0, loss (1/4)^2 · ln(4/3)."""
    z = torch.tensor([math.log(3.0), 0.0]).reshape(1, 2, 1, 1)
    got = build_loss([{"type": "focal", "gamma": 2}])(z, torch.zeros(1, 1, 1, dtype=torch.long))
    assert got.item() == pytest.approx(0.25 ** 2 * math.log(4 / 3), rel=1e-6)


def test_ohem_selects_like_mmsegmentation():
    """4 labelled pixels with true-class probabilities 0.9, 0.6, 0.3, 0.8 (one image): thresh 0.7 keeps
    0.6 and 0.3; min_kept 2 raises the threshold to the sorted[2] = 0.8 -> same two kept (0.8 is not
    below itself); min_kept 3 -> sorted[3] = 0.9 keeps 0.6, 0.3, 0.8. Without thresh: the min_kept
    largest losses (smallest probabilities)."""
    probs = torch.tensor([0.9, 0.6, 0.3, 0.8])
    z = torch.stack([torch.log(probs), torch.log(1 - probs)]).reshape(1, 2, 1, 4)
    labels = torch.zeros(1, 1, 4, dtype=torch.long)
    ce = -torch.log(probs)
    for min_kept, kept in [(0, [1, 2]), (2, [1, 2]), (3, [1, 2, 3])]:
        loss = build_loss([{"type": "ohem_cross_entropy", "thresh": 0.7, "min_kept": min_kept}])
        assert loss(z, labels).item() == pytest.approx(float(ce[kept].sum() / 4), rel=1e-5)
    for min_kept, kept in [(0, []), (1, [2]), (3, [1, 2, 3]), (9, [0, 1, 2, 3])]:  # no thresh: the largest losses
        loss = build_loss([{"type": "ohem_cross_entropy", "thresh": None, "min_kept": min_kept}])
        assert loss(z, labels).item() == pytest.approx(float(ce[kept].sum() / 4), rel=1e-5, abs=1e-9)


def test_dice_and_lovasz_by_hand():
    """A perfect (saturated) prediction: both are 0. Lovász on 2 pixels of one class, errors 0.5 and
    0.2 for a present class: ranks give Δ = 1/2, then 2/2 -> 0.5·0.5 + 0.2·0.5."""
    z = torch.tensor([[40.0, -40.0], [-40.0, 40.0]]).T.reshape(1, 2, 1, 2)
    labels = torch.tensor([[[0, 1]]])
    assert build_loss([{"type": "dice", "smooth": 0.0}])(z, labels).item() == pytest.approx(0.0, abs=1e-6)
    assert build_loss([{"type": "lovasz"}])(z, labels).item() == pytest.approx(0.0, abs=1e-6)
    p0 = torch.tensor([0.5, 0.8])  # class-0 probabilities; both pixels are class 0
    z = torch.stack([torch.log(p0), torch.log(1 - p0)]).reshape(1, 2, 1, 2)
    got = build_loss([{"type": "lovasz"}])(z, torch.zeros(1, 1, 2, dtype=torch.long))
    assert got.item() == pytest.approx(0.5 * 0.5 + 0.2 * 0.5, rel=1e-5)


BIN_LOGITS = torch.randn(2, 1, 3, 4, generator=GEN)
BIN_LABELS = torch.randint(0, 2, (2, 3, 4), generator=GEN)
BIN_LABELS[0, 0, 0] = 255


def _ref_sigmoid(z, kind, alpha=None, gamma=2.0, smooth=1.0):
    pixels = _pixels(BIN_LABELS)
    total, inter, p_sum, t_sum = 0.0, 0.0, 0.0, 0.0
    for b, y, x in pixels:
        p, t = torch.sigmoid(z[b, 0, y, x]), float(BIN_LABELS[b, y, x] == 1)
        p_t = p if t else 1 - p
        a = 1.0 if alpha is None else (alpha if t else 1 - alpha)
        total = total - a * (1 - p_t) ** (gamma if kind == "focal" else 0) * torch.log(p_t)
        inter, p_sum, t_sum = inter + p * t, p_sum + p, t_sum + t
    if kind == "dice":
        return 1 - (2 * inter + smooth) / (p_sum + t_sum + smooth)
    return total / len(pixels)


@pytest.mark.parametrize(("spec", "kind", "alpha"), [
    ({"type": "cross_entropy"}, "ce", None),
    ({"type": "focal", "gamma": 2.0, "alpha": 0.25}, "focal", 0.25),
    ({"type": "dice"}, "dice", None),
], ids=["bce", "sigmoid-focal", "binary-dice"])
def test_sigmoid_forms_match_their_formulas(spec, kind, alpha):
    got, got_grad = _grads(lambda z: build_loss([spec])(z, BIN_LABELS), BIN_LOGITS)
    want, want_grad = _grads(lambda z: _ref_sigmoid(z, kind, alpha), BIN_LOGITS)
    torch.testing.assert_close(got, want.float(), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(got_grad, want_grad, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("term", ["lovasz", "ohem_cross_entropy"])
def test_softmax_only_terms_refuse_one_channel(term):
    with pytest.raises(TransegError, match=f"loss {term}: needs a softmax model"):
        build_loss([{"type": term}])(BIN_LOGITS, BIN_LABELS)


def test_aux_outputs_get_the_same_terms():
    spec = [{"type": "dice", "weight": 1.0}, {"type": "focal", "weight": 0.5}]
    loss = build_loss(spec, aux_weights={"aux0": 0.4})
    out = SegOutput(LOGITS, {"aux0": LOGITS.flip(1)[..., :2, :3]}, {"aux0": 1.0})  # coarser aux, upsampled
    value, parts = loss.with_parts(out, LABELS)
    torch.testing.assert_close(value, parts["loss_seg"] + 0.4 * parts["loss_aux0"])
    torch.testing.assert_close(parts["loss_aux0"], loss(out.aux["aux0"], LABELS))


def test_auto_class_weight_and_bad_specs():
    pixels = [600, 300, 100]
    loss = build_loss([{"type": "cross_entropy", "class_weight": "auto"}], class_weight=inverse_log_weights(pixels))
    shares = [0.6, 0.3, 0.1]
    weights = [1 / math.log(1.02 + s) for s in shares]
    torch.testing.assert_close(loss(LOGITS, LABELS), _ref_ce(LOGITS, LABELS, weights).float(), rtol=1e-5, atol=0)
    with pytest.raises(TransegError, match="class_weight auto needs"):
        build_loss([{"type": "cross_entropy", "class_weight": "auto"}])(LOGITS, LABELS)
    with pytest.raises(TransegError, match="class_weight has 2 values for a 3-class model"):
        build_loss([{"type": "cross_entropy", "class_weight": [1, 2]}])(LOGITS, LABELS)
    with pytest.raises(TransegError, match=r"loss\.0"):
        build_loss([{"type": "tversky"}])
    with pytest.raises(TransegError, match="alpha weighs the foreground"):
        build_loss([{"type": "focal", "alpha": 0.3}])(LOGITS, LABELS)
    assert transeg.build_loss is build_loss


def test_config_loss_list():
    data = {"data": {"dataset": "ade20k", "root": "x"}}
    assert parse_config(data).loss is None
    cfg = parse_config({**data, "loss": [{"type": "ohem_cross_entropy", "weight": 1.0, "min_kept": 10},
                                         {"type": "lovasz", "weight": 0.5}]})
    assert [t.type for t in cfg.loss] == ["ohem_cross_entropy", "lovasz"] and cfg.loss[0].thresh == 0.7
    with pytest.raises(TransegError, match=r"loss\.0\.dice\.smooth"):
        parse_config({**data, "loss": [{"type": "dice", "smooth": -1}]})


# ------------------------------------------------------------------ 2 processes = 1
DDP_SPECS = {
    "ce": [{"type": "cross_entropy", "class_weight": [0.5, 2.0, 1.0, 3.0]}],
    "focal": [{"type": "focal", "gamma": 2.0}],
    "dice": [{"type": "dice"}],
    "lovasz": [{"type": "lovasz"}],
    "ohem": [{"type": "ohem_cross_entropy", "thresh": 0.3, "min_kept": 12}],
    "ohem-top-k": [{"type": "ohem_cross_entropy", "thresh": None, "min_kept": 7}],
    "mixed": [{"type": "cross_entropy", "weight": 1.0}, {"type": "dice", "weight": 0.5},
              {"type": "lovasz", "weight": 0.25}],
    "binary": [{"type": "cross_entropy"}, {"type": "focal", "alpha": 0.25}, {"type": "dice"}],
}


def _ddp_problem(name: str) -> tuple[torch.Tensor, torch.Tensor, torch.nn.Conv2d]:
    """A batch of 4 whose halves have very different shares of ignored pixels, and a 1x1 conv."""
    gen = torch.Generator().manual_seed(1)
    binary = name == "binary"
    x = torch.randn(4, 3, 6, 5, generator=gen)
    labels = torch.randint(0, 2 if binary else 4, (4, 6, 5), generator=gen)
    labels[:2, 1:] = 255  # first half: mostly ignored
    labels[3, 0, 0] = 255
    conv = torch.nn.Conv2d(3, 1 if binary else 4, 1)
    with torch.no_grad():
        conv.weight.copy_(torch.randn(conv.weight.shape, generator=gen))
        conv.bias.copy_(torch.randn(conv.bias.shape, generator=gen))
    return x, labels, conv


def _ddp_worker(rank: int, port: int, out_dir: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=2)
    results = {}
    for name, spec in DDP_SPECS.items():
        x, labels, conv = _ddp_problem(name)
        half = slice(rank * 2, rank * 2 + 2)
        loss = build_loss(spec, info=DistInfo(rank=rank, world_size=2))(conv(x[half]), labels[half])
        loss.backward()
        grad = torch.cat([conv.weight.grad.flatten(), conv.bias.grad])
        dist.all_reduce(grad)
        value = loss.detach().clone()
        dist.all_reduce(value)
        results[name] = {"grad": grad / 2, "loss": value / 2}  # DDP's average; the logged mean
    if rank == 0:
        torch.save(results, Path(out_dir) / "ddp.pt")
    dist.destroy_process_group()


def test_two_processes_give_the_gradient_of_one(tmp_path):
    port = 29400 + os.getpid() % 200
    mp.spawn(_ddp_worker, args=(port, str(tmp_path)), nprocs=2, join=True)
    results = torch.load(tmp_path / "ddp.pt")
    for name, spec in DDP_SPECS.items():
        x, labels, conv = _ddp_problem(name)
        loss = build_loss(spec)(conv(x), labels)
        loss.backward()
        grad = torch.cat([conv.weight.grad.flatten(), conv.bias.grad])
        torch.testing.assert_close(results[name]["grad"], grad, rtol=1e-5, atol=1e-6, msg=name)
        torch.testing.assert_close(results[name]["loss"], loss.detach(), rtol=1e-5, atol=1e-6, msg=name)


@pytest.mark.parametrize("name", ["segformer-b0", "segmenter-t16-mask", "segdeformer-mit-b0"])
def test_every_term_trains_every_decoder_family(name):
    """forward_train's output (Segmenter: stride-1 logits over a padded input; SegDeformer: labels in the
    forward pass) goes through every term; the gradient reaches the encoder, finite."""
    torch.manual_seed(0)
    model = transeg.create_model(name, num_classes=4, image_size=64 if "segmenter" in name else None)
    x, labels = torch.randn(2, 3, 64, 64), torch.randint(0, 4, (2, 64, 64))
    labels[:, :8] = 255
    spec = [{"type": t} for t in ("cross_entropy", "focal", "dice", "lovasz")]
    spec.append({"type": "ohem_cross_entropy", "min_kept": 100})
    value = build_loss(spec)(model.forward_train(x, labels), labels)
    value.backward()
    grads = [p.grad for p in model.encoder.parameters() if p.grad is not None]
    assert torch.isfinite(value) and grads and all(torch.isfinite(g).all() for g in grads)
    assert any(g.abs().sum() > 0 for g in grads)


def test_terms_that_cannot_apply_are_refused_before_training():
    loss = build_loss([{"type": "dice"}, {"type": "cross_entropy", "class_weight": [1, 2]}])
    with pytest.raises(TransegError, match=r"^loss\.1\.class_weight: 2 values for a 3-class model$"):
        loss.check_classes(3)
    with pytest.raises(TransegError, match=r"^loss\.0\.alpha: weighs the foreground"):
        build_loss([{"type": "focal", "alpha": 0.25}]).check_classes(3)
    with pytest.raises(TransegError, match=r"^loss\.1: lovasz needs a softmax model"):
        build_loss([{"type": "dice"}, {"type": "lovasz"}]).check_classes(1)
    build_loss([{"type": "focal", "alpha": 0.25}, {"type": "dice"}]).check_classes(1)  # the sigmoid forms


@pytest.mark.slow  # about 30 s: two training runs, one under torchrun
def test_trainer_under_torchrun_two_processes_match_one(tmp_path):
    """The trainer hands its process group to the terms: a Dice + Lovász + OHEM run under torchrun with
    2 CPU processes reaches the weights of 1 process with the same global batch."""
    import subprocess
    import sys

    from transeg.data.synthetic import write_synthetic_dataset

    scenes = write_synthetic_dataset(tmp_path / "scenes", num_train=4, num_val=1, size=(48, 48))
    config = tmp_path / "c.yaml"
    config.write_text(f"data: {{dataset: folder, root: {scenes}, crop_size: [48, 48], scale: [48, 48], "
                      "test_scale: null, num_workers: 0}\nschedule: {iterations: 2, warmup_iters: 1}\n"
                      "model: {drop_path_rate: 0, decoder_dropout: 0}\n"
                      "train: {batch_size: 4, eval_interval: 2}\n"
                      "optimizer: {type: sgd, lr: 0.01, weight_decay: 0.0}\n"
                      "loss: [{type: dice}, {type: lovasz, weight: 0.5}, "
                      "{type: ohem_cross_entropy, thresh: 0.5, min_kept: 200}]\n")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    for name, launcher in [("one", []), ("two", ["-m", "torch.distributed.run", "--nproc_per_node=2",
                                                 f"--master_port={29800 + os.getpid() % 100}"])]:
        subprocess.run([sys.executable, *launcher, "-m", "transeg", "train", str(config),
                        "--set", f"output_dir={tmp_path / name}"], check=True, env=env, capture_output=True)
    one = transeg.load_model(tmp_path / "one" / "model.safetensors").state_dict()
    two = transeg.load_model(tmp_path / "two" / "model.safetensors").state_dict()
    worst = max((one[k].float() - two[k].float()).abs().max().item() for k in one)
    assert worst < 1e-4, f"max weight difference {worst:.2e}"
    from transeg.engine.recipe import load_config
    from transeg.engine.train import Trainer

    start = Trainer(load_config(config, [f"output_dir={tmp_path / 'fresh'}"])).model.state_dict()
    assert not torch.equal(start["decoder.classifier.weight"], one["decoder.classifier.weight"])  # it trained
