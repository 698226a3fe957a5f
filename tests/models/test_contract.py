"""The contract every zoo model keeps, so that a model added to the zoo is checked without new tests.

Each check runs on a shrunken copy of the variant (one or two blocks per stage, narrow widths, 7
classes) that keeps every architectural switch: encoder and decoder kind, SegDeformer mode, fusion
and efficient ratio, distilled tokens, MiT position embeddings and Mix-FFN, decoder stages, ViT
outputs, patch and window sizes, ResNet groups and stem. The checks: logits at odd input sizes,
a gradient for every parameter, the auxiliary outputs of ``forward_train``, the exact save/load
round trip, and ONNX export (by default one model per decoder variant — kind, SegDeformer mode and
fusion — and per encoder kind; the others are marked slow).

``state_dict_keys.json`` beside this file snapshots the state-dict keys of every full-size zoo
model: their count, a sha256 of the sorted "key shape" lines and the key names with numeric path
components collapsed to ``{i}``. Those keys are the transeg file format (a saved model holds exactly
them), so regenerating the snapshot is a file-format change, for commits that mean to make one:

    TRANSEG_UPDATE_KEY_SNAPSHOT=1 pytest tests/models/test_contract.py -k snapshot
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import os
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import pytest
import torch

import transeg
from tests.conftest import randomize_batchnorm
from transeg.inference.backends import OnnxSegmentor
from transeg.inference.export import export_onnx
from transeg.models.factory import DECODERS, ENCODERS
from transeg.models.zoo import model_config

NAMES = transeg.list_models()
NUM_CLASSES = 7
BATCH = 2
SIZES = ((67, 93), (97, 61))  # odd, and neither a multiple of any stride or patch size
SNAPSHOT = Path(__file__).with_name("state_dict_keys.json")
UPDATE_SNAPSHOT = os.environ.get("TRANSEG_UPDATE_KEY_SNAPSHOT") == "1"
# Parameters (by name, in any model) that legitimately get no gradient, or an all-zero one, in a training
# pass -> why. None so far: with non-trivial BatchNorm weights every parameter of every zoo model learns.
NO_GRADIENT: dict[str, str] = {}


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """Tiny models gain nothing from intra-op threads, and lose much to them on shared cores."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


# --------------------------------------------------------------------------- shrinking
def _shrink_mit(cfg: Any) -> Any:
    """One block per stage; widths 8, 16, 24, 32 with 8 channels per head."""
    n = len(cfg.depths)
    return dataclasses.replace(cfg, depths=(1,) * n, widths=tuple(8 * (i + 1) for i in range(n)),
                               heads=tuple(range(1, n + 1)))


def _shrink_vit(cfg: Any) -> Any:
    """One block per output, the outputs remapped onto them; width 32, 2 heads."""
    n = len(cfg.out_indices)
    return dataclasses.replace(cfg, depth=n, out_indices=tuple(range(-n, 0)), embed_dim=32, heads=2)


def _shrink_swin(cfg: Any) -> Any:
    """At most two blocks per stage (the second shifts its windows); width 8, 8 channels per head."""
    return dataclasses.replace(cfg, depths=tuple(min(d, 2) for d in cfg.depths), embed_dim=8,
                               heads=tuple(2**i for i in range(len(cfg.depths))))


def _shrink_resnet(cfg: Any) -> Any:
    """One bottleneck per stage (the widths are the architecture's own)."""
    return dataclasses.replace(cfg, depths=(1,) * len(cfg.depths))


SHRINK_ENCODER: dict[str, Callable[[Any], Any]] = {
    "mit": _shrink_mit, "vit": _shrink_vit, "swin": _shrink_swin, "resnet": _shrink_resnet,
}
# decoder fields set where they are non-zero: a head that is switched off stays off
SHRINK_DECODER: dict[str, dict[str, int]] = {
    "mlp": {"embed_dim": 16},
    "mmseg_mlp": {"channels": 16},
    "linear": {},
    "mask_transformer": {"n_layers": 1},  # d_model and heads follow the encoder
    "uper": {"channels": 16, "aux_channels": 8},
    "mla": {"channels": 16, "head_channels": 8},
    "segdeformer": {"channels": 16, "uper_aux_channels": 8},
}


def test_every_encoder_and_decoder_kind_has_a_shrink_rule():
    """A new kind in the builder table needs its rule here before its zoo models can be checked."""
    assert set(SHRINK_ENCODER) == set(ENCODERS)
    assert set(SHRINK_DECODER) == set(DECODERS)


@functools.cache
def shrunk_config(name: str) -> transeg.ModelConfig:
    """The zoo config ``name`` cut down by the rules above, with ``NUM_CLASSES`` classes."""
    config = model_config(name)
    narrow = {k: v for k, v in SHRINK_DECODER[config.decoder].items() if getattr(config.decoder_config, k)}
    return dataclasses.replace(
        config, num_classes=NUM_CLASSES,
        encoder_config=SHRINK_ENCODER[config.encoder](config.encoder_config),
        decoder_config=dataclasses.replace(config.decoder_config, **narrow),
    )


def shrunk_model(name: str, seed: int = 0) -> transeg.Segmentor:
    """A fresh, seeded shrunken model in eval mode, its BatchNorms given non-trivial parameters and
    statistics (so that zero-initialised residual branches pass gradients)."""
    torch.manual_seed(seed)
    model = transeg.build_model(shrunk_config(name))
    randomize_batchnorm(model, seed)
    return model.eval()


@functools.cache
def full_size(name: str) -> transeg.Segmentor:
    """The zoo model as published, built on the meta device: its structure without weights."""
    with torch.device("meta"):
        return transeg.create_model(name)


def collapsed(keys: Iterable[str]) -> list[str]:
    """The distinct key names with every numeric path component replaced by ``{i}``, sorted."""
    return sorted({".".join("{i}" if part.isdigit() else part for part in key.split(".")) for key in keys})


@pytest.mark.parametrize("name", NAMES)
def test_shrunk_model_keeps_the_architecture(name):
    full, small = full_size(name), shrunk_model(name)
    assert (small.config.encoder, small.config.decoder) == (full.config.encoder, full.config.decoder)
    assert small.encoder.strides == full.encoder.strides
    assert small.encoder.pad_multiple == full.encoder.pad_multiple
    assert small.onnx_dynamic_size == full.onnx_dynamic_size
    assert collapsed(small.state_dict()) == collapsed(full.state_dict())


# --------------------------------------------------------------------------- the contract
def expected_size(model: transeg.Segmentor, size: tuple[int, int]) -> tuple[int, int]:
    """The logits' (h, w) for an (H, W) input. An encoder that pads (ViT) gets logits cropped back to
    (H, W) by ``Segmentor.unpad``; the others (MiT, Swin, ResNet) end at their first map, of
    ceil(H / 4) x ceil(W / 4), which the MLA head alone upsamples, by ``up_scale``."""
    if model.encoder.pad_multiple:
        return size
    scale = model.config.decoder_config.up_scale if model.config.decoder == "mla" else 1
    stride = model.encoder.strides[0]
    return scale * -(-size[0] // stride), scale * -(-size[1] // stride)


@pytest.mark.parametrize("name", NAMES)
def test_logits_at_odd_input_sizes(name):
    model = shrunk_model(name)
    for size in SIZES:
        with torch.no_grad():
            logits = model(torch.randn(BATCH, 3, *size))
        assert logits.shape == (BATCH, NUM_CLASSES, *expected_size(model, size)), size
        assert torch.isfinite(logits).all(), size


@pytest.mark.parametrize("name", NAMES)
def test_every_parameter_gets_a_gradient(name):
    """A training pass (dropout, drop path, batch statistics); the loss weighs every logit and aux
    map entry randomly, as a plain sum is blind behind normalisations over the classes."""
    model = shrunk_model(name).train()
    torch.manual_seed(1)
    out = model.forward_train(torch.randn(BATCH, 3, *SIZES[0]))
    sum((m * torch.randn_like(m)).sum() for m in (out.logits, *out.aux.values())).backward()
    trainable = {n: p for n, p in model.named_parameters() if p.requires_grad and n not in NO_GRADIENT}
    assert trainable
    missing = [n for n, p in trainable.items() if p.grad is None]
    assert not missing, f"no gradient: {missing}"
    assert not [n for n, p in trainable.items() if not torch.isfinite(p.grad).all()], "non-finite gradients"
    zero = [n for n, p in trainable.items() if not p.grad.any()]
    assert not zero, f"all-zero gradient: {zero}"


@pytest.mark.parametrize("name", NAMES)
def test_forward_train_auxiliary_outputs(name):
    model = shrunk_model(name)
    x = torch.randn(BATCH, 3, *SIZES[1])
    with torch.no_grad():
        out = model.forward_train(x)
        logits = model(x)
    assert out.aux.keys() == out.aux_weights.keys()
    for key, aux in out.aux.items():
        assert aux.shape[:2] == (BATCH, NUM_CLASSES), key
        assert torch.isfinite(aux).all(), key
    torch.testing.assert_close(out.logits, logits, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("name", NAMES)
def test_save_load_round_trip_is_exact(name, tmp_path):
    model = shrunk_model(name)
    loaded = transeg.load_model(transeg.save_model(model, tmp_path / "model.safetensors"))
    assert loaded.config == model.config
    state, loaded_state = model.state_dict(), loaded.state_dict()
    assert loaded_state.keys() == state.keys()
    differ = [k for k, v in state.items() if v.dtype != loaded_state[k].dtype or not torch.equal(v, loaded_state[k])]
    assert not differ
    x = torch.randn(BATCH, 3, *SIZES[0])
    with torch.no_grad():
        assert torch.equal(loaded(x), model(x))


def _onnx_cases() -> list[Any]:
    """Every zoo name; by default the first model of each decoder variant (kind, mode, fusion) and then
    of each encoder kind not yet covered runs, the others are marked slow (an export takes seconds)."""
    configs = {name: model_config(name) for name in NAMES}
    chosen: dict[tuple, str] = {}
    for name, config in configs.items():
        decoder = config.decoder_config
        chosen.setdefault((config.decoder, getattr(decoder, "mode", None), getattr(decoder, "fusion", None)), name)
    covered = {configs[name].encoder for name in chosen.values()}
    for name, config in configs.items():
        if config.encoder not in covered:
            covered.add(config.encoder)
            chosen[(config.encoder,)] = name
    default = set(chosen.values())
    return [name if name in default else pytest.param(name, marks=pytest.mark.slow) for name in NAMES]


@pytest.mark.parametrize("name", _onnx_cases())
def test_onnx_export_matches_eager(name, tmp_path):
    """Dynamic height and width where the model declares them (``onnx_dynamic_size``), else a fixed
    size; the batch is dynamic either way."""
    pytest.importorskip("onnxruntime")
    pytest.importorskip("onnxscript")
    model = shrunk_model(name)
    dynamic = model.onnx_dynamic_size
    path = export_onnx(model, tmp_path / "model.onnx", size=None if dynamic else SIZES[0])
    runner = OnnxSegmentor(path, model.config, model.min_input_size)
    other = SIZES[1] if dynamic else SIZES[0]
    for shape in [(BATCH, 3, *SIZES[0]), (1, 3, *other)]:
        x = torch.randn(*shape)
        with torch.no_grad():
            expected, got = model(x), runner(x)
        assert got.shape == expected.shape, shape
        assert (got - expected).abs().max() < 1e-4, shape


# --------------------------------------------------------------------------- the key snapshot
def key_snapshot(model: torch.nn.Module) -> dict[str, Any]:
    """Key count, sha256 of the sorted "key shape" lines and the collapsed key names of ``model``."""
    state = model.state_dict()
    lines = "\n".join(sorted(f"{key} {tuple(value.shape)}" for key, value in state.items()))
    return {"count": len(state), "sha256": hashlib.sha256(lines.encode()).hexdigest(),
            "collapsed_keys": collapsed(state)}


@pytest.fixture(scope="module")
def snapshot() -> dict[str, dict[str, Any]]:
    """The committed snapshot; rewritten first from the zoo when TRANSEG_UPDATE_KEY_SNAPSHOT=1."""
    if UPDATE_SNAPSHOT:
        entries = {name: key_snapshot(full_size(name)) for name in NAMES}
        SNAPSHOT.write_text(json.dumps(entries, indent=1, sort_keys=True) + "\n")
    return json.loads(SNAPSHOT.read_text())


def test_key_snapshot_lists_the_zoo(snapshot):
    assert sorted(snapshot) == NAMES, (f"zoo models without a snapshot: {sorted(set(NAMES) - set(snapshot))}; "
                                       f"snapshots without a zoo model: {sorted(set(snapshot) - set(NAMES))}")


@pytest.mark.parametrize("name", NAMES)
def test_state_dict_key_snapshot(name, snapshot):
    expected, got = snapshot.get(name), key_snapshot(full_size(name))
    assert expected is not None, f"{name} has no snapshot"
    added = sorted(set(got["collapsed_keys"]) - set(expected["collapsed_keys"]))
    removed = sorted(set(expected["collapsed_keys"]) - set(got["collapsed_keys"]))
    assert got == expected, (
        f"{name}: the state dict, i.e. the file format, changed: {expected['count']} -> {got['count']} keys; "
        f"collapsed keys added {added}, removed {removed} (both empty: a count or a shape changed). If intended, "
        "regenerate with TRANSEG_UPDATE_KEY_SNAPSHOT=1 pytest tests/models/test_contract.py -k snapshot")
