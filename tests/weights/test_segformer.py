"""Round trips through every weight format, and clear errors for bad checkpoints."""

from __future__ import annotations

import dataclasses
import pickle
import re

import pytest
import torch

import transeg
from tests.conftest import hf_segformer, randomize_batchnorm
from transeg.models.factory import build_model, model_config_from_dict
from transeg.weights.segformer import hf_to_transeg, official_to_transeg, transeg_to_hf


def _official_key(hf_key: str) -> str:
    """The official SegFormer name of a transformers 4.x key (transformers' conversion, reversed)."""
    key = hf_key.removeprefix("segformer.encoder.")
    rules = [
        (r"patch_embeddings\.(\d)\.proj\.", lambda m: f"backbone.patch_embed{int(m[1]) + 1}.proj."),
        (r"patch_embeddings\.(\d)\.layer_norm\.", lambda m: f"backbone.patch_embed{int(m[1]) + 1}.norm."),
        (r"block\.(\d)\.(\d+)\.", lambda m: f"backbone.block{int(m[1]) + 1}.{m[2]}."),
        (r"^layer_norm\.(\d)\.", lambda m: f"backbone.norm{int(m[1]) + 1}."),
        (r"decode_head\.linear_c\.(\d)\.", lambda m: f"decode_head.linear_c{int(m[1]) + 1}."),
    ]
    for pattern, repl in rules:
        key = re.sub(pattern, repl, key)
    for old, new in [("layer_norm_1", "norm1"), ("attention.self.query", "attn.q"),
                     ("attention.self.sr", "attn.sr"), ("attention.self.layer_norm", "attn.norm"),
                     ("attention.output.dense", "attn.proj"), ("layer_norm_2", "norm2"),
                     ("mlp.dense1", "mlp.fc1"), ("mlp.dense2", "mlp.fc2"),
                     ("decode_head.linear_fuse.weight", "decode_head.linear_fuse.conv.weight"),
                     ("decode_head.batch_norm", "decode_head.linear_fuse.bn"),
                     ("decode_head.classifier", "decode_head.linear_pred")]:
        key = key.replace(old, new)
    return key


def official_state_from_hf(hf) -> dict[str, torch.Tensor]:
    """An official-format (mmseg 0.x) state dict holding the weights of a transformers model.

    The transformers names are those ``save_pretrained`` writes (4.x names in 4.x and 5.x).
    """
    import tempfile

    from safetensors.torch import load_file

    with tempfile.TemporaryDirectory() as directory:
        hf.save_pretrained(directory)
        saved = load_file(f"{directory}/model.safetensors")
    out, kv = {}, {}
    for key, value in saved.items():
        if ".attention.self.key." in key or ".attention.self.value." in key:
            part = "key" if ".key." in key else "value"
            target = _official_key(key.replace(f".attention.self.{part}.", ".attn.kv."))
            kv.setdefault(target, {})[part] = value
        else:
            out[_official_key(key)] = value
    for target, parts in kv.items():
        out[target] = torch.cat([parts["key"], parts["value"]])
    out["decode_head.conv_seg.weight"] = torch.randn(150, 256, 1, 1)  # unused in the official head
    out["decode_head.conv_seg.bias"] = torch.randn(150)
    return out


def test_transeg_round_trip_is_exact(tmp_path):
    model = transeg.create_model("segformer-b0", num_classes=5, class_names=tuple("abcde"))
    randomize_batchnorm(model)
    path = transeg.save_model(model, tmp_path / "m.safetensors")
    loaded = transeg.load_model(path)
    assert loaded.config == model.config
    for key, value in model.state_dict().items():
        assert torch.equal(value, loaded.state_dict()[key]), key
    assert not list(tmp_path.glob(".m.safetensors.*")), "temporary file left behind"


def test_transeg_config_beside_weights(tmp_path):
    from safetensors.torch import save_file

    model = transeg.create_model("segformer-b0", num_classes=3)
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, tmp_path / "m.safetensors")
    (tmp_path / "m.json").write_text(model.config.to_json())
    assert transeg.load_model(tmp_path / "m.safetensors").config == model.config


def test_official_checkpoint_loads_and_matches(tmp_path):
    hf = hf_segformer("b0", num_labels=150, seed=4)
    path = tmp_path / "segformer.b0.512x512.ade.160k.pth"
    torch.save({"meta": {"CLASSES": ["x"] * 150}, "state_dict": official_state_from_hf(hf)}, path)
    loaded = transeg.load_model(path)
    assert loaded.config.name == "segformer-b0"
    enc = loaded.config.encoder_config
    assert (enc.norm_eps, enc.embed_norm_eps) == (1e-6, 1e-5), "official LayerNorm eps"
    # With transformers' eps everywhere, the same weights give transformers' logits.
    hf_eps = dataclasses.replace(loaded.config, encoder_config=dataclasses.replace(enc, norm_eps=1e-5))
    twin = build_model(hf_eps)
    twin.load_state_dict(loaded.state_dict())
    x = torch.randn(1, 3, 128, 160)
    with torch.inference_mode():
        assert (twin(x) - hf(pixel_values=x).logits).abs().max() < 1e-4
        assert (loaded(x) - twin(x)).abs().max() < 1e-2  # only the eps differs


def test_mit_imagenet_backbone_initialises_encoder(tmp_path):
    hf = hf_segformer("b1", num_labels=2, seed=5)
    official = official_state_from_hf(hf)
    backbone = {k.removeprefix("backbone."): v for k, v in official.items() if k.startswith("backbone.")}
    backbone["head.weight"], backbone["head.bias"] = torch.randn(1000, 512), torch.randn(1000)
    torch.save(backbone, tmp_path / "mit_b1.pth")
    model = transeg.create_model("segformer-b1", num_classes=4, encoder_weights=str(tmp_path / "mit_b1.pth"))
    expected = official_to_transeg(official)
    for key, value in model.encoder.state_dict().items():
        assert torch.equal(value, expected[f"encoder.{key}"]), key
    with pytest.raises(transeg.TransegError, match="encoder_weights"):
        transeg.load_model(tmp_path / "mit_b1.pth")


def test_hf_export_round_trip(tmp_path):
    transformers = pytest.importorskip("transformers")
    model = transeg.create_model("segformer-b0", num_classes=6)
    model = transeg.load_model(transeg.save_hf_pretrained(model, tmp_path / "hf"))  # HF eps from here on
    randomize_batchnorm(model)
    transeg.save_hf_pretrained(model, tmp_path / "hf")
    hf = transformers.SegformerForSemanticSegmentation.from_pretrained(tmp_path / "hf").eval()
    x = torch.randn(1, 3, 100, 140)
    with torch.inference_mode():
        assert (hf(pixel_values=x).logits - model(x)).abs().max() < 1e-4


def test_conversions_are_inverse():
    state = transeg.create_model("segformer-b2", num_classes=3).state_dict()
    back = hf_to_transeg(transeg_to_hf(state))
    assert back.keys() == state.keys()
    assert all(torch.equal(back[k], state[k]) for k in state)


# --------------------------------------------------------------------------- bad input
def test_missing_file():
    with pytest.raises(transeg.TransegError, match="nope.pth: no such file"):
        transeg.load_model("nope.pth")


def test_unknown_model_name():
    with pytest.raises(transeg.TransegError, match="unknown model name 'segformer-b9'"):
        transeg.create_model("segformer-b9")


def test_truncated_safetensors(tmp_path):
    path = transeg.save_model(transeg.create_model("segformer-b0", num_classes=2), tmp_path / "m.safetensors")
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(transeg.TransegError, match="m.safetensors"):
        transeg.load_model(path)


def test_truncated_pth(tmp_path):
    path = tmp_path / "t.pth"
    torch.save({"state_dict": {"backbone.norm1.weight": torch.ones(4)}}, path)
    path.write_bytes(path.read_bytes()[:40])
    with pytest.raises(transeg.TransegError, match="t.pth"):
        transeg.load_model(path)


def test_pickle_payload_is_not_executed(tmp_path):
    marker = tmp_path / "pwned"

    class Payload:
        def __reduce__(self):
            return (open, (str(marker), "w"))

    path = tmp_path / "evil.pth"
    path.write_bytes(pickle.dumps({"state_dict": Payload()}))
    with pytest.raises(transeg.TransegError, match="evil.pth: cannot read checkpoint safely"):
        transeg.load_model(path)
    assert not marker.exists()


def test_other_class_count_names_the_keys(tmp_path):
    path = transeg.save_model(transeg.create_model("segformer-b0", num_classes=2), tmp_path / "m.safetensors")
    model = transeg.create_model("segformer-b0", num_classes=7)
    from transeg.weights.files import read_safetensors
    from transeg.weights.keys import load_state_strict

    with pytest.raises(transeg.TransegError, match=r"decoder\.classifier\.weight \(2, 256, 1, 1\) vs \(7, 256"):
        load_state_strict(model, read_safetensors(path)[0], str(path))


def test_other_architecture_names_the_keys(tmp_path):
    path = tmp_path / "b1.pth"
    torch.save(official_state_from_hf(hf_segformer("b1", num_labels=3)), path)
    with pytest.raises(transeg.TransegError, match=r"b0\.pth.*(missing|shape mismatch)"):
        transeg.create_model("segformer-b0", encoder_weights=str(path.rename(tmp_path / "b0.pth")))


def test_unknown_key_in_official_checkpoint(tmp_path):
    state = official_state_from_hf(hf_segformer("b0", num_labels=3))
    state["backbone.extra_thing.weight"] = torch.ones(1)
    torch.save(state, tmp_path / "x.pth")
    with pytest.raises(transeg.TransegError, match="extra_thing"):
        transeg.load_model(tmp_path / "x.pth")


def test_bad_config_key(tmp_path):

    data = transeg.create_model("segformer-b0", num_classes=2).config.to_dict()
    data["encoder_config"]["widthz"] = [1]
    with pytest.raises(transeg.TransegError, match="widthz"):
        model_config_from_dict(data)


def test_transformers_classification_backbone_initialises_encoder(tmp_path):
    """A transformers MiT classifier directory (as published for ImageNet) works as encoder weights."""
    transformers = pytest.importorskip("transformers")
    config = transformers.SegformerConfig(num_labels=10)
    torch.manual_seed(6)
    classifier = transformers.SegformerForImageClassification(config).eval()
    classifier.save_pretrained(tmp_path)
    model = transeg.create_model("segformer-b0", num_classes=3, encoder_weights=str(tmp_path))
    x = torch.randn(1, 3, 64, 64)
    with torch.inference_mode():
        expected = classifier.segformer(pixel_values=x).last_hidden_state
        twin = build_model(dataclasses.replace(model.config, encoder_config=dataclasses.replace(
            model.config.encoder_config, norm_eps=1e-5)))
        twin.load_state_dict(model.state_dict())
        assert (twin.encoder(x)[-1] - expected).abs().max() < 1e-4
