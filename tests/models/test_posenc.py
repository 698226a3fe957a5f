"""MiT's Table 1c options (position embeddings, plain FFN) and ``transeg eval`` at several test scales."""

from __future__ import annotations

import dataclasses
import json

import pytest
import torch
from click.testing import CliRunner
from PIL import Image

import transeg.models.encoders.mit as mit
from transeg.api import create_model
from transeg.cli import cli
from transeg.data.synthetic import write_synthetic_dataset
from transeg.errors import TransegError
from transeg.models.encoders.mit import MiTConfig
from transeg.models.factory import build_model, model_config_from_json
from transeg.models.layers.pos_embed import resize_pos_embed
from transeg.models.zoo import model_config
from transeg.weights.load import load_model
from transeg.weights.native import save_model


def pe_model(size=(64, 96), mix_ffn=False, num_classes=4, seed=0):
    torch.manual_seed(seed)
    config = model_config("segformer-b0", num_classes)
    encoder = dataclasses.replace(config.encoder_config, pos_embed=True, pos_embed_size=size, mix_ffn=mix_ffn)
    return build_model(dataclasses.replace(config, name="segformer-b0-pe-test", encoder_config=encoder))


def test_tables_have_each_stage_grid_for_the_training_size():
    model = pe_model((64, 96))
    shapes = [tuple(stage.pos_embed.shape) for stage in model.encoder.stages]
    assert shapes == [(1, 16 * 24, 32), (1, 8 * 12, 64), (1, 4 * 6, 160), (1, 2 * 3, 256)]
    assert MiTConfig().stage_grids((360, 480)) == [(90, 120), (45, 60), (23, 30), (12, 15)]


def test_training_size_uses_the_table_as_is(monkeypatch):
    model = pe_model((64, 96))
    stage = model.encoder.stages[0]
    assert stage.position_embedding((16, 24)) is stage.pos_embed

    def no_resize(*args, **kwargs):
        raise AssertionError("resized at the training size")

    monkeypatch.setattr(mit, "resize_pos_embed", no_resize)
    with torch.no_grad():
        assert model(torch.randn(1, 3, 64, 96)).shape == (1, 4, 16, 24)
        with pytest.raises(AssertionError, match="resized at the training size"):
            model(torch.randn(1, 3, 96, 64))


def test_other_sizes_interpolate_the_table_and_cache_it_in_eval():
    model = pe_model((64, 96))
    for size, out in (((96, 64), (24, 16)), ((50, 70), (13, 18)), ((128, 192), (32, 48))):
        with torch.no_grad():
            assert model(torch.randn(2, 3, *size)).shape == (2, 4, *out)
    stage = model.encoder.stages[1]
    expected = resize_pos_embed(stage.pos_embed.detach(), (8, 12), (5, 7), 0)
    with torch.no_grad():
        first = stage.position_embedding((5, 7))
        assert torch.equal(first, expected) and stage.position_embedding((5, 7)) is first  # cached
        stage.pos_embed.add_(1.0)  # a new version: the cache must not serve the old table
        assert torch.allclose(stage.position_embedding((5, 7)), expected + 1.0)
    model.train()
    with_grad = stage.position_embedding((5, 7))
    assert with_grad.requires_grad and with_grad is not stage.position_embedding((5, 7))  # no cache in training
    with_grad.sum().backward()
    assert stage.pos_embed.grad is not None and stage.pos_embed.grad.abs().sum() > 0


def test_model_built_under_inference_mode_runs_at_other_sizes():
    with torch.inference_mode():
        encoder = mit.MixTransformer(MiTConfig(pos_embed=True, pos_embed_size=(64, 96)))
        assert [tuple(f.shape[2:]) for f in encoder(torch.randn(1, 3, 96, 64))] == [(24, 16), (12, 8), (6, 4), (3, 2)]


def test_state_dict_keys_only_change_when_enabled():
    plain = set(create_model("segformer-b0", 4).state_dict())
    assert not any("pos_embed" in k for k in plain)
    dwconv = {k for k in plain if ".mlp.dwconv." in k}
    assert len(dwconv) == 2 * 8  # weight and bias in each of the 8 blocks
    pe = set(create_model("segformer-b0-pe", 4).state_dict())
    added = {f"encoder.stages.{i}.pos_embed" for i in range(4)}
    assert pe == (plain - dwconv) | added
    pe_mixffn = set(pe_model(mix_ffn=True).state_dict())
    assert pe_mixffn == plain | added


def test_plain_ffn_has_no_depthwise_conv():
    config = dataclasses.replace(model_config("segformer-b0", 4).encoder_config, mix_ffn=False)
    encoder = mit.MixTransformer(config)
    assert not any("dwconv" in name for name, _ in encoder.named_parameters())
    assert not any(isinstance(m, torch.nn.Conv2d) and m.groups > 1 for m in encoder.modules())
    block = encoder.stages[0].blocks[0].mlp
    x = torch.randn(2, 6, 32)
    assert torch.allclose(block(x, 2, 3), block.fc2(block.act(block.fc1(x))))
    default = mit.MixTransformer(MiTConfig())
    assert sum(p.numel() for p in default.parameters()) > sum(p.numel() for p in encoder.parameters())


def test_zoo_variants_and_defaults():
    assert MiTConfig().pos_embed is False and MiTConfig().mix_ffn is True
    pe = model_config("segformer-b0-pe").encoder_config
    assert (pe.pos_embed, pe.mix_ffn, pe.pos_embed_size) == (True, False, (512, 512))
    assert model_config("segformer-b0-pe-240x320").encoder_config.pos_embed_size == (240, 320)
    for bad in ((0, 64), (64,), (64.0, 64)):
        with pytest.raises(TransegError, match="pos_embed_size"):
            MiTConfig(pos_embed=True, pos_embed_size=bad)


def test_checkpoint_round_trips_exactly(tmp_path):
    model = pe_model((64, 96), num_classes=5)
    path = save_model(model, tmp_path / "pe.safetensors")
    loaded = load_model(path)
    assert loaded.config == model.config
    assert loaded.config.encoder_config.pos_embed_size == (64, 96)
    state, loaded_state = model.state_dict(), loaded.state_dict()
    assert state.keys() == loaded_state.keys()
    assert all(torch.equal(state[k], loaded_state[k]) for k in state)
    x = torch.randn(1, 3, 80, 80)
    with torch.no_grad():
        assert torch.equal(model(x), loaded(x))
    assert model_config_from_json(model.config.to_json()) == model.config


def run(*args):
    return CliRunner().invoke(cli, [str(a) for a in args])


@pytest.fixture(scope="module")
def eval_setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("posenc_eval")
    write_synthetic_dataset(root / "data", num_train=1, num_val=2, size=(64, 96))
    config = root / "c.yaml"
    config.write_text(f"data: {{dataset: folder, root: {root / 'data'}, test_scale: null, num_workers: 0}}\n")
    checkpoint = save_model(pe_model((64, 96), num_classes=6), root / "pe.safetensors")
    return config, checkpoint


def test_eval_at_two_test_scales_writes_two_blocks(eval_setup, tmp_path):
    config, checkpoint = eval_setup
    result = run("eval", checkpoint, "--config", config, "--test-scale", "96", "64", "--test-scale", "144", "96",
                 "--out", tmp_path)
    assert result.exit_code == 0, result.output
    assert "test scale 96x64" in result.output and "test scale 144x96" in result.output
    assert "mIoU by test scale" in result.output
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert list(metrics["test_scales"]) == ["96x64", "144x96"]
    for label, block in metrics["test_scales"].items():
        assert block["test_scale"] == [int(v) for v in label.split("x")]
        assert 0 <= block["mIoU"] <= 1 and len(block["per_class"]) == 6
        assert Image.open(tmp_path / f"confusion_{label}.png").size[0] > 0
    assert metrics["model"] == str(checkpoint) and "mIoU" not in metrics


def test_eval_with_one_or_no_test_scale_stays_flat(eval_setup, tmp_path):
    config, checkpoint = eval_setup
    for args in ([], ["--test-scale", "96", "64"]):
        result = run("eval", checkpoint, "--config", config, *args, "--out", tmp_path)
        assert result.exit_code == 0, result.output
        metrics = json.loads((tmp_path / "metrics.json").read_text())
        assert 0 <= metrics["mIoU"] <= 1 and "test_scales" not in metrics
        assert metrics["test_scale"] == ([96, 64] if args else None)
        assert (tmp_path / "confusion.png").is_file()


def test_eval_bad_test_scale_is_one_line(eval_setup, tmp_path):
    config, checkpoint = eval_setup
    result = run("eval", checkpoint, "--config", config, "--test-scale", "0", "64", "--out", tmp_path)
    assert result.exit_code == 2
    assert result.output.strip().startswith("error: Invalid value for '--test-scale': each side must be in 1..8192")
    assert len(result.output.strip().splitlines()) == 1
