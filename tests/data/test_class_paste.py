"""data.paste_classes: each training crop receives the chosen classes' pixels of the previous crop."""

from __future__ import annotations

import pytest
import torch
from click.testing import CliRunner

from tests.engine.test_train import tiny_config
from transeg.cli import cli
from transeg.data.class_paste import paste_classes
from transeg.data.synthetic import write_synthetic_dataset
from transeg.engine.train import Trainer


def pasted_by_hand(image: torch.Tensor, label: torch.Tensor, classes: set[int]):
    """The reference: pixel by pixel, crop i takes crop i-1's pixel where that one's label is in ``classes``."""
    image, label = image.clone(), label.clone()
    source_image, source_label = image.clone(), label.clone()
    batch, _, height, width = image.shape
    for i in range(batch):
        for y in range(height):
            for x in range(width):
                if int(source_label[i - 1, y, x]) in classes:
                    image[i, :, y, x] = source_image[i - 1, :, y, x]
                    label[i, y, x] = source_label[i - 1, y, x]
    return image, label


def test_pixels_and_labels_move_together():
    generator = torch.Generator().manual_seed(0)
    image = torch.randn(3, 3, 6, 7, generator=generator)
    label = torch.randint(0, 5, (3, 6, 7), generator=generator)
    label[1, 0, :] = 255  # padding is never pasted
    got_image, got_label = paste_classes(image, label, torch.tensor([2, 4]))
    want_image, want_label = pasted_by_hand(image, label, {2, 4})
    assert torch.equal(got_label, want_label) and torch.equal(got_image, want_image)
    assert not torch.equal(got_label, label)  # something was pasted
    assert torch.isin(got_label[0][got_label[0] != label[0]], torch.tensor([2, 4])).all()


def test_a_batch_of_one_is_left_alone():
    image, label = torch.randn(1, 3, 4, 4), torch.full((1, 4, 4), 2)
    got_image, got_label = paste_classes(image, label, torch.tensor([2]))
    assert torch.equal(got_image, image) and torch.equal(got_label, label)


def test_the_trainer_batches_are_pasted(tmp_path):
    root = write_synthetic_dataset(tmp_path / "scenes", num_train=6, num_val=1, size=(64, 64))
    plain = Trainer(tiny_config(root, tmp_path / "plain", train={"batch_size": 3}))
    pasted = Trainer(tiny_config(root, tmp_path / "pasted", train={"batch_size": 3},
                                 data={"paste_classes": ["stripes", "dots"]}))
    for before, after in zip(plain._loader(), pasted._loader(), strict=True):
        want_image, want_label = pasted_by_hand(before["image"], before["label"], {3, 4})
        assert torch.equal(after["label"], want_label) and torch.equal(after["image"], want_image)


def test_an_unknown_class_is_one_line(tmp_path):
    root = write_synthetic_dataset(tmp_path / "scenes", num_train=2, num_val=1, size=(32, 32))
    path = tmp_path / "c.yaml"
    path.write_text(f"data: {{dataset: folder, root: {root}, crop_size: [32, 32], num_workers: 0, "
                    f"paste_classes: [disc, pole]}}\nschedule: {{iterations: 1, warmup_iters: 0}}\n"
                    f"output_dir: {tmp_path / 'run'}\n")
    result = CliRunner().invoke(cli, ["train", str(path)])
    assert result.exit_code == 2, result.output
    assert result.output.strip() == ("error: data.paste_classes: 'pole' is not a class of the dataset "
                                     "(background, disc, square, stripes, dots, triangle)")


@pytest.mark.parametrize("value", ["pole", [1, 2]])
def test_paste_classes_are_names(tmp_path, value):
    path = tmp_path / "c.yaml"
    path.write_text(f"data: {{dataset: folder, root: x, paste_classes: {value}}}\n")
    result = CliRunner().invoke(cli, ["train", str(path)])
    assert result.exit_code == 2 and "data.paste_classes" in result.output, result.output
