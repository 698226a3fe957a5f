"""The model a recipe's ``model:`` section asks for (``training_model_config``)."""

from __future__ import annotations

import pytest

from transeg.engine.recipe import ModelSection
from transeg.engine.training_model import training_model_config
from transeg.errors import TransegError

CLASSES = ("a", "b", "c")


def test_section_options_reach_the_model_config():
    section = ModelSection(name="segmenter-s16-mask", image_size=(480, 640), drop_path_rate=0.2,
                           encoder_dropout=0.1, decoder_dropout=0.0, decoder_layers=1)
    config = training_model_config(section, CLASSES, palette=((0, 0, 0), (1, 1, 1), (2, 2, 2)))
    encoder, decoder = config.encoder_config, config.decoder_config
    assert (config.num_classes, config.class_names, config.palette[2]) == (3, CLASSES, (2, 2, 2))
    assert (encoder.grid, encoder.drop_path_rate, encoder.dropout) == ((30, 40), 0.2, 0.1)
    assert (decoder.dropout, decoder.n_layers) == (0.0, 1)


def test_unset_options_keep_the_zoo_values():
    config = training_model_config(ModelSection(name="segmenter-s16-mask"), CLASSES)
    assert (config.encoder_config.image_size, config.encoder_config.dropout) == (512, 0.0)
    assert config.decoder_config.n_layers == 2


@pytest.mark.parametrize(("section", "expected"), [
    (ModelSection(name="segformer-b0", encoder_dropout=0.1),
     "model.encoder_dropout 0.1: the 'mit' encoder of segformer-b0 has no 'dropout' setting"),
    (ModelSection(name="segmenter-s16-linear", decoder_layers=1),
     "model.decoder_layers 1: the 'linear' decoder of segmenter-s16-linear has no 'n_layers' setting"),
    (ModelSection(name="segmenter-s16-linear", decoder_dropout=0.1),
     "model.decoder_dropout 0.1: the 'linear' decoder"),
    (ModelSection(name="segformer-b0", image_size=512), "has no position-embedding size"),
    (ModelSection(name="segmenter-s16-mask", image_size=500), "image_size 500 is not a multiple of patch_size 16"),
    (ModelSection(name="segmenter-s16-mask", num_classes=4), "model.num_classes is 4 but the dataset has 3"),
])
def test_options_a_model_lacks_are_named(section, expected):
    with pytest.raises(TransegError, match=expected):
        training_model_config(section, CLASSES)
