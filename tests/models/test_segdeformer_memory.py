"""SegDeformer's momentum tokens (Table 5, "as MCIBI"): MCIBI's class-centre memory on hand-checkable
tensors, and the labels' path from the trainer to the decoder."""

from __future__ import annotations

import pytest
import torch

from transeg.engine.train import _TrainForward
from transeg.models.config import ModelConfig
from transeg.models.decoders.segdeformer.config import SegDeformerConfig
from transeg.models.decoders.segdeformer.memory import ClassCentreMemory
from transeg.models.encoders.vit import ViTConfig
from transeg.models.factory import build_model
from transeg.models.layers.resize import resize
from transeg.models.layers.tokens import tokens_to_map


def grid(*pixels: tuple[float, float]) -> torch.Tensor:
    """One image of 2-channel features, one row of pixels: (1, 2, 1, P)."""
    return torch.tensor(pixels).T.reshape(1, 2, 1, len(pixels))


def memory(classes: int = 3, iters: int = 100, power: float = 0.9) -> ClassCentreMemory:
    return ClassCentreMemory(classes, 2, base_momentum=0.9, iters=iters, power=power)


def test_a_class_seen_first_takes_its_mean_feature():
    mem = memory()
    mem.update(grid((1.0, 0.0), (3.0, 0.0), (0.0, 2.0)), torch.tensor([[[0, 0, 1]]]))
    assert torch.equal(mem.tokens, torch.tensor([[2.0, 0.0], [0.0, 2.0], [0.0, 0.0]]))  # class 2: unseen, zeros
    assert int(mem.steps) == 1


def test_update_weights_pixels_by_their_dissimilarity_to_the_memory():
    mem = memory()
    mem.tokens[0] = torch.tensor([1.0, 0.0])
    # cos = 1 for (2, 0): weight 0; cos = 0 for (0, 1): weight 1, so the centre is (0, 1), not the mean (1, 0.5)
    mem.update(grid((2.0, 0.0), (0.0, 1.0)), torch.tensor([[[0, 0]]]))
    assert torch.allclose(mem.tokens[0], torch.tensor([0.1, 0.9]))  # (1 - 0.9) row + 0.9 centre at t = 0


def test_momentum_decays_as_mcibi_poly_schedule():
    mem = memory(iters=100, power=0.9)
    assert mem.momentum() == pytest.approx(0.9)
    mem.steps.fill_(50)
    assert mem.momentum() == pytest.approx(0.9 * 0.5**0.9)
    mem.tokens[1] = torch.tensor([1.0, 0.0])
    mem.update(grid((0.0, 1.0)), torch.tensor([[[1]]]))
    m = 0.9 * 0.5**0.9
    assert torch.allclose(mem.tokens[1], torch.tensor([1 - m, m]))
    assert int(mem.steps) == 51
    mem.steps.fill_(100)  # the end of the schedule: the memory is frozen
    mem.update(grid((0.0, 5.0)), torch.tensor([[[1]]]))
    assert torch.allclose(mem.tokens[1], torch.tensor([1 - m, m]))


def test_ignored_pixels_and_batch_wide_centres():
    mem = memory()
    features = torch.cat([grid((4.0, 0.0), (9.0, 9.0)), grid((2.0, 0.0), (0.0, 0.0))])
    mem.update(features, torch.tensor([[[0, 255]], [[0, 255]]]))
    assert torch.equal(mem.tokens[0], torch.tensor([3.0, 0.0]))  # over both images, 255 left out
    assert not mem.tokens[1:].any()


def test_features_are_upsampled_to_the_label_size():
    mem = memory()
    features = torch.tensor([1.0, 3.0]).reshape(1, 1, 1, 2).repeat(1, 2, 1, 1)  # (1, 2, 1, 2)
    # bilinear, align_corners=False, 2 -> 4 columns: 1, 1.5, 2.5, 3 in each channel
    mem.update(features, torch.tensor([[[0, 0, 1, 1]]]))
    assert torch.allclose(mem.tokens[:2], torch.tensor([[1.25, 1.25], [2.75, 2.75]]))


def test_labels_reach_the_decoder_padded_like_the_input():
    """A ViT pads a 40 x 24 input to 48 x 32: the labels get 255 there, so only class 1 is seen."""
    vit = ViTConfig(patch_size=16, embed_dim=32, depth=4, heads=2, image_size=48, out_indices=(0, 1, 2, 3))
    decoder = SegDeformerConfig(channels=16, token_update="momentum", decoupled=False)
    model = build_model(ModelConfig(encoder="vit", encoder_config=vit, decoder="segdeformer",
                                    decoder_config=decoder, num_classes=3)).train()
    seen = []
    model.decoder.external.register_forward_hook(lambda module, args, out: seen.append(args[:2]))
    labels = torch.ones(2, 40, 24, dtype=torch.long)
    out = _TrainForward(model)(torch.randn(2, 3, 40, 24), labels)  # the trainer's call
    assert out.logits.shape == (2, 3, 40, 24)
    x, size = seen[0]  # X_inter (2, 3 x 2, 16) on the padded input's grid
    upsampled = resize(tokens_to_map(x.detach(), size), (48, 32))[:, :, :40, :24]
    tokens = model.decoder.external.memory.tokens
    assert torch.allclose(tokens[1], upsampled.mean(dim=(0, 2, 3)), atol=1e-6)  # class 1 seen first: its mean
    assert not tokens[0].any() and not tokens[2].any()
