"""``transeg.load_model``: a zoo name or any checkpoint path, with the class count checked."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

import transeg
from transeg.errors import TransegError
from transeg.weights.load import load_model as load_model_file


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("ckpt") / "b0.safetensors"
    return transeg.save_model(transeg.create_model("segformer-b0", num_classes=4), path)


def test_zoo_name_gives_the_zoo_model():
    model = transeg.load_model("segformer-b0")
    assert model.config == transeg.create_model("segformer-b0").config
    assert model.num_classes == 150
    assert transeg.load_model("segformer-b0", num_classes=7).num_classes == 7


def test_unknown_name_is_todays_one_line_error():
    with pytest.raises(TransegError) as caught:
        transeg.load_model("segformer-b9")
    assert str(caught.value) == "'segformer-b9' is neither a model name (see `transeg list`) nor an existing path"


@pytest.mark.parametrize("as_str", [True, False])
def test_checkpoint_path_loads_its_weights(checkpoint, as_str):
    model = transeg.load_model(str(checkpoint) if as_str else checkpoint)
    saved = load_model_file(checkpoint)
    assert model.num_classes == 4
    for key, value in saved.state_dict().items():
        assert torch.equal(value, model.state_dict()[key]), key


def test_checkpoint_with_other_class_count_is_refused(checkpoint):
    assert transeg.load_model(checkpoint, num_classes=4).num_classes == 4
    with pytest.raises(TransegError, match=r"b0\.safetensors: the checkpoint has 4 classes, not 3$"):
        transeg.load_model(checkpoint, num_classes=3)


def test_a_path_object_is_never_a_zoo_name(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(TransegError, match="segformer-b0: no such file or directory"):
        transeg.load_model(Path("segformer-b0"))
