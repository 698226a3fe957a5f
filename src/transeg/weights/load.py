"""Loading a model, or an encoder's pretrained weights, from any file a family declares it reads.

``load_model`` recognises, in this order:

* directories: a transformers SegFormer directory (``config.json`` + weights), a transeg model
  directory (``model.safetensors``);
* transeg files: ``.safetensors`` with the model config in the metadata (or a ``.json`` beside), and
  training checkpoints (``iter_*.pt``, the model config inside);
* pickled state dicts, by the ``checkpoints`` each family in ``FAMILIES`` declares, in order:
  Segmenter (official, MMSegmentation), official SegDeformer, MMSegmentation's model-zoo SegFormer
  (``SegformerHead``: ``decode_head.fusion_conv``), official SegFormer (``decode_head.linear_c*``),
  and the bare backbones (ViT, Swin, ResNet, MiT), which are named and pointed at ``encoder_weights``.

Foreign pickles are opened with ``torch.load(weights_only=True)``: no code in them runs.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

from transeg.errors import TransegError
from transeg.models.factory import ENCODERS
from transeg.models.segmentor import Segmentor
from transeg.weights import native, resnet, segdeformer, segformer, segmenter, swin
from transeg.weights.channels import adapt_input_convs
from transeg.weights.files import state_dict_of, torch_load_safely
from transeg.weights.formats import CheckpointFormat, DirectoryFormat, EncoderReader, Formats
from transeg.weights.keys import load_state_strict, preview_keys

# The families whose formats are tried, in this order (a state dict is given to the first format
# that recognises it, so the specific come before the broad).
FAMILIES: tuple[Formats, ...] = (
    segmenter.FORMATS, segdeformer.FORMATS, swin.FORMATS, resnet.FORMATS, segformer.FORMATS, native.FORMATS,
)
CHECKPOINT_FORMATS: tuple[CheckpointFormat, ...] = tuple(f for family in FAMILIES for f in family.checkpoints)
DIRECTORY_FORMATS: tuple[DirectoryFormat, ...] = tuple(f for family in FAMILIES for f in family.directories)
ENCODER_READERS: dict[str, EncoderReader] = {k: r for family in FAMILIES for k, r in family.encoders.items()}


def load_model(path: str | os.PathLike[str]) -> Segmentor:
    """Load a model from any supported file or directory (see the module docstring)."""
    path = Path(path)
    if not path.exists():
        raise TransegError(f"{path}: no such file or directory")
    if path.is_dir():
        for directory_format in DIRECTORY_FORMATS:
            if directory_format.recognise(path):
                return directory_format.load(path)
        raise TransegError(f"{path}: neither a transformers checkpoint directory nor a transeg model directory")
    if path.stat().st_size == 0:
        raise TransegError(f"{path}: the file is empty")
    if path.suffix == ".safetensors":
        return native.load_safetensors(path)
    obj = torch_load_safely(path)
    if native.is_training_checkpoint(obj):
        return native.load_training_checkpoint(path, obj)
    state = state_dict_of(obj, path)
    for checkpoint_format in CHECKPOINT_FORMATS:
        if checkpoint_format.recognise(state):
            return checkpoint_format.load(path, state)
    raise TransegError(f"{path}: unrecognised checkpoint format (first keys: {preview_keys(list(state), 3)})")


def load_encoder_weights(model: Segmentor, path: str | os.PathLike[str]) -> None:
    """Initialise ``model.encoder`` from a pretrained backbone file of a format its family declares;
    every encoder key must match. An N-band model reads the RGB file as an RGB twin would, then its
    input convolution is adapted (``channels.adapt_input_conv``)."""
    reader = ENCODER_READERS.get(model.config.encoder)
    if reader is None:
        raise TransegError(f"no pretrained-weights reader for {model.config.encoder!r} encoders")
    bands = model.in_channels
    if bands == 3:
        load_state_strict(model.encoder, reader(Path(path), model.encoder), str(path))
        return
    rgb_config = dataclasses.replace(model.config.encoder_config, in_channels=3)
    rgb_encoder = ENCODERS[model.config.encoder][1](rgb_config)
    state = reader(Path(path), rgb_encoder)
    load_state_strict(rgb_encoder, state, str(path))
    state = adapt_input_convs(state, model.encoder.state_dict(), bands)
    load_state_strict(model.encoder, state, str(path))
