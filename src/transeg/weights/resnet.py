"""ResNet / ResNeXt encoder weights: pure state-dict conversions onto transeg's keys, and reading them.

transeg keys (without the ``encoder.`` prefix) are torchvision's: ``conv1``, ``bn1`` (7x7 stem) or
``stem.{conv1,bn1,conv2,bn2,conv3,bn3}`` (deep stem), ``layer{1..4}.{j}.{conv1,bn1,conv2,bn2,conv3,
bn3}``, ``layer{1..4}.0.downsample.{0,1}``.

Formats read (``create_model(..., encoder_weights=PATH)``):

* torchvision and timm ImageNet checkpoints (``resnet50``, ``resnet101``, ``resnext101_64x4d``, …):
  the same names, the classifier ``fc`` dropped;
* MMSegmentation / mmcv ResNetV1c backbones (``resnet50_v1c``, ``resnet101_v1c``): the deep stem is
  a Sequential there, ``stem.{0,1,3,4,6,7}``; and the ``backbone.`` of MMSegmentation segmentation
  checkpoints (heads ignored);
* transformers ``ResNetModel`` / ``ResNetForImageClassification`` / ``ResNetBackbone`` (e.g.
  ``microsoft/resnet-50``): ``embedder.embedder``, ``encoder.stages.{i}.layers.{j}.{layer.{k},
  shortcut}.{convolution,normalization}``; its ``config.json`` must describe bottleneck blocks with
  the stride on the 3x3 conv (``downsample_in_bottleneck`` false);
* transeg files (``encoder.`` keys).

BatchNorm ``num_batches_tracked`` counters that a checkpoint lacks (torchvision's predate them) keep
the model's. Weights of stages the model does not build (``out_stages`` ending early) are dropped.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from torch import nn

from transeg.errors import TransegError
from transeg.models.encoders.base import Encoder
from transeg.weights.files import StateDict, read_json, read_weights
from transeg.weights.formats import CheckpointFormat, Formats, backbone_only
from transeg.weights.keys import Rules, preview_keys, rename

_BN = r"(weight|bias|running_mean|running_var|num_batches_tracked)"
_TRANSEG: Rules = [
    (r"conv1\.weight", r"conv1.weight"),
    (rf"bn1\.{_BN}", r"bn1.\1"),
    (r"stem\.conv([123])\.weight", r"stem.conv\1.weight"),
    (rf"stem\.bn([123])\.{_BN}", r"stem.bn\1.\2"),
    (r"layer(\d)\.(\d+)\.conv([123])\.weight", r"layer\1.\2.conv\3.weight"),
    (rf"layer(\d)\.(\d+)\.bn([123])\.{_BN}", r"layer\1.\2.bn\3.\4"),
    (r"layer(\d)\.(\d+)\.downsample\.0\.weight", r"layer\1.\2.downsample.0.weight"),
    (rf"layer(\d)\.(\d+)\.downsample\.1\.{_BN}", r"layer\1.\2.downsample.1.\3"),
]
_CLASSIFIER: Rules = [(r"fc\.(weight|bias)", None)]
# MMSegmentation's deep stem: Sequential(conv, bn, relu, conv, bn, relu, conv, bn, relu)
_MMSEG_STEM = {"0": "conv1", "1": "bn1", "3": "conv2", "4": "bn2", "6": "conv3", "7": "bn3"}


def is_resnet_state(state: StateDict) -> bool:
    """Holds a ResNet in a supported format (torchvision/timm/MMSegmentation names, or transformers')."""
    return any(re.fullmatch(r"(backbone\.|encoder\.)?layer1\.0\.conv1\.weight", k) for k in state) or any(
        re.fullmatch(r"(resnet\.)?embedder\.embedder\.convolution\.weight", k) for k in state)


def torchvision_to_transeg(state: StateDict, source: str = "ResNet checkpoint") -> StateDict:
    """torchvision / timm names (``fc`` dropped), with MMSegmentation's deep stem ``stem.{0,1,3,4,6,7}``
    renamed and the ``backbone.`` of segmentation checkpoints taken (``decode_head``/``auxiliary_head``
    ignored)."""
    if any(k.startswith("backbone.") for k in state):
        state = {k.removeprefix("backbone."): v for k, v in state.items()
                 if not k.startswith(("decode_head.", "auxiliary_head."))}
    out = {}
    for key, value in state.items():
        m = re.fullmatch(r"stem\.(\d)\.(.+)", key)
        if m and m[1] in _MMSEG_STEM:
            key = f"stem.{_MMSEG_STEM[m[1]]}.{m[2]}"
        out[key] = value
    return rename(out, [*_TRANSEG, *_CLASSIFIER], source)


_HF_KEY = re.compile(
    r"encoder\.stages\.(\d+)\.layers\.(\d+)\.(layer\.(\d)|shortcut)\.(convolution|normalization)\.(\w+)"
)


def hf_resnet_to_transeg(state: StateDict, source: str = "transformers ResNet checkpoint") -> StateDict:
    """transformers ``ResNetModel`` / ``ResNetForImageClassification`` / ``ResNetBackbone`` names."""
    out: StateDict = {}
    unknown = []
    for key, value in state.items():
        key = key.removeprefix("resnet.")
        if m := re.fullmatch(r"embedder\.embedder\.(convolution|normalization)\.(\w+)", key):
            out[f"{'conv1' if m[1] == 'convolution' else 'bn1'}.{m[2]}"] = value
        elif m := _HF_KEY.fullmatch(key):
            prefix = f"layer{int(m[1]) + 1}.{m[2]}"
            if m[3] == "shortcut":
                out[f"{prefix}.downsample.{0 if m[5] == 'convolution' else 1}.{m[6]}"] = value
            else:
                out[f"{prefix}.{'conv' if m[5] == 'convolution' else 'bn'}{int(m[4]) + 1}.{m[6]}"] = value
        elif not re.fullmatch(r"classifier\.\d+\.(weight|bias)", key):
            unknown.append(key)
    if unknown:
        raise TransegError(f"{source}: unexpected key(s) {preview_keys(unknown)}")
    return rename(out, _TRANSEG, source)


def resnet_encoder_state(state: StateDict, source: str) -> StateDict:
    """The ResNet encoder (transeg keys, no ``encoder.`` prefix) in a state dict of any supported format."""
    if any(k.startswith("encoder.layer1.") for k in state):  # transeg
        return rename({k.removeprefix("encoder."): v for k, v in state.items() if k.startswith("encoder.")},
                      _TRANSEG, source)
    if not is_resnet_state(state):
        raise TransegError(f"{source}: no ResNet weights recognised (first keys: {preview_keys(list(state), 3)})")
    if any("embedder.embedder." in k for k in state):
        return hf_resnet_to_transeg(state, source)
    return torchvision_to_transeg(state, source)


def _check_hf_config(directory: Path) -> None:
    config_path = directory / "config.json"
    config = read_json(config_path)
    if config.get("model_type") != "resnet":
        raise TransegError(f"{config_path}: model_type {config.get('model_type')!r} is not a ResNet")
    if config.get("layer_type", "bottleneck") != "bottleneck":
        raise TransegError(f"{config_path}: layer_type {config['layer_type']!r}: only bottleneck ResNets are supported")
    if config.get("downsample_in_bottleneck") or config.get("downsample_in_first_stage"):
        raise TransegError(f"{config_path}: downsampling in the 1x1 conv or in the first stage (ResNet v1) is not "
                           "supported: transeg's ResNet strides the 3x3 conv (v1.5)")


def fit_to_encoder(state: StateDict, encoder: nn.Module, source: str) -> StateDict:
    """``state`` for ``encoder``: stages it does not build dropped, missing BatchNorm counters taken
    from it, and a stem of the other kind named as such."""
    current = encoder.state_dict()
    has_deep = any(k.startswith("stem.") for k in state)
    wants_deep = encoder.config.deep_stem
    if has_deep != wants_deep and ("conv1.weight" in state or has_deep):
        have, want = ("deep (3x3 x 3)", "7x7") if has_deep else ("7x7", "deep (3x3 x 3)")
        raise TransegError(f"{source}: a ResNet with the {have} stem; the model has the {want} stem "
                           f"(ResNetConfig.deep_stem={wants_deep})")
    built = len(encoder.stage_names)
    out = {k: v for k, v in state.items()
           if not ((m := re.match(r"layer(\d)\.", k)) and int(m[1]) > built)}
    for key, value in current.items():
        if key.endswith("num_batches_tracked") and key not in out:
            out[key] = value.clone()
    return out


def read_resnet_encoder_state(path: str | os.PathLike[str], encoder: Encoder) -> StateDict:
    """Weights for the ResNet ``encoder`` from any supported file or transformers directory."""
    path = Path(path)
    if path.is_dir():
        _check_hf_config(path)
    state = resnet_encoder_state(read_weights(path), str(path))
    return fit_to_encoder(state, encoder, str(path))


FORMATS = Formats(
    checkpoints=(CheckpointFormat("ResNet backbone", is_resnet_state,
                                  backbone_only("a ResNet checkpoint (only its backbone is read)")),),
    encoders={"resnet": read_resnet_encoder_state},
)
