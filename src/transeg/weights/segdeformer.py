"""Pure state-dict conversions between official SegDeformer checkpoints and transeg's keys.

The official checkpoints (lygsbw/segdeformer, an MMSegmentation 0.29 fork) hold a MiT ``backbone.*``
and a ``SegDeformerHead3`` ``decode_head.*``. Their configs build MMSegmentation's own
``MixVisionTransformer`` from ``mit_b*_mm.pth``, so the backbone keys are MMSegmentation's
(``weights/mmseg_mit.py``); the official SegFormer names (``block{s}.{j}.attn.q`` …) are read too.

Head keys, official -> transeg (the released-mode decoder, ``models/decoders/segdeformer/released.py``):

* ``decode_head.convs.{i}.{conv,bn}.*`` -> ``decoder.proj.{i}.{conv,bn}.*``
* ``decode_head.fusion_conv.{conv,bn}.*`` -> ``decoder.fuse.{conv,bn}.*``
* ``decode_head.class_token.{q,k}.*`` -> ``decoder.class_{q,k}.*``
* ``decode_head.class_token.{cls_token,prop_token}`` -> ``decoder.{cls_token,prop_token}``
* ``decode_head.trans.attn.{query,key,value,out}_project.{conv,bn}.*`` -> ``decoder.internal.{query,key,value,out}.*``
* ``decode_head.trans.cross_attn.{…}_project.{conv,bn}.*`` -> ``decoder.external.{query,key,value,out}.*``
* ``decode_head.conv_seg.*`` -> ``decoder.classifier.*``

MMSegmentation's MiT uses LayerNorm eps 1e-6 everywhere (the official SegFormer code: 1e-5 in the
patch embeddings and the spatial reduction); ``segdeformer_model_config`` sets it accordingly.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

from transeg.errors import TransegError
from transeg.models.config import ModelConfig
from transeg.models.decoders.segdeformer.config import SegDeformerConfig
from transeg.models.segmentor import Segmentor
from transeg.models.zoo import MMSEG_MIT_EPS, find_variant
from transeg.weights import segformer
from transeg.weights.files import StateDict
from transeg.weights.formats import CheckpointFormat, Formats
from transeg.weights.keys import Rules, build_with_state, preview_keys, rename
from transeg.weights.mmseg_mit import (
    is_mmseg_mit,
    mmseg_mit_to_official,
    official_mit_to_mmseg,
    transeg_mit_to_official,
)

_HEAD: list[tuple[str, str]] = [  # (official regex, transeg replacement), both without the prefixes
    (r"convs\.(\d+)\.(conv|bn)\.(\w+)", r"proj.\1.\2.\3"),
    (r"fusion_conv\.(conv|bn)\.(\w+)", r"fuse.\1.\2"),
    (r"class_token\.(q|k)\.(weight|bias)", r"class_\1.\2"),
    (r"class_token\.(cls_token|prop_token)", r"\1"),
    (r"trans\.attn\.(query|key|value|out)_project\.(conv|bn)\.(\w+)", r"internal.\1.\2.\3"),
    (r"trans\.cross_attn\.(query|key|value|out)_project\.(conv|bn)\.(\w+)", r"external.\1.\2.\3"),
    (r"conv_seg\.(weight|bias)", r"classifier.\1"),
]
_HEAD_BACK: list[tuple[str, str]] = [
    (r"proj\.(\d+)\.(conv|bn)\.(\w+)", r"convs.\1.\2.\3"),
    (r"fuse\.(conv|bn)\.(\w+)", r"fusion_conv.\1.\2"),
    (r"class_(q|k)\.(weight|bias)", r"class_token.\1.\2"),
    (r"(cls_token|prop_token)", r"class_token.\1"),
    (r"internal\.(query|key|value|out)\.(conv|bn)\.(\w+)", r"trans.attn.\1_project.\2.\3"),
    (r"external\.(query|key|value|out)\.(conv|bn)\.(\w+)", r"trans.cross_attn.\1_project.\2.\3"),
    (r"classifier\.(weight|bias)", r"conv_seg.\1"),
]


def is_segdeformer_state(state: StateDict) -> bool:
    """An official SegDeformer checkpoint: a ``SegDeformerHead3`` (class tokens + transformer)."""
    return any(k.startswith(("decode_head.class_token.", "decode_head.trans.")) for k in state)


# --------------------------------------------------------------------------- whole checkpoints
def official_to_transeg(state: StateDict) -> StateDict:
    """An official SegDeformer checkpoint (``backbone.*`` MiT in MMSegmentation or official SegFormer
    names, ``decode_head.*`` SegDeformerHead3) -> transeg keys of a released-mode model."""
    backbone = {k.removeprefix("backbone."): v for k, v in state.items() if k.startswith("backbone.")}
    head = {k.removeprefix("decode_head."): v for k, v in state.items() if k.startswith("decode_head.")}
    other = sorted(set(state) - {f"backbone.{k}" for k in backbone} - {f"decode_head.{k}" for k in head})
    if other:
        raise TransegError(f"official SegDeformer checkpoint: unexpected key(s) {preview_keys(other)}")
    if is_mmseg_mit(backbone):
        backbone = mmseg_mit_to_official(backbone)
    out = segformer.official_to_transeg(backbone)
    head_rules: Rules = [(rf"decode_head\.{p}", f"decoder.{r}") for p, r in _HEAD]
    out.update(rename({f"decode_head.{k}": v for k, v in head.items()}, head_rules, "official SegDeformer checkpoint"))
    return out


def transeg_to_official(state: StateDict, backbone: str = "mmseg") -> StateDict:
    """A transeg released-mode MiT model -> an official checkpoint's ``state_dict`` (``backbone``:
    "mmseg", as the released checkpoints, or "official" SegFormer names)."""
    mit = transeg_mit_to_official({k: v for k, v in state.items() if k.startswith("encoder.")})
    if backbone == "mmseg":
        mit = official_mit_to_mmseg(mit)
    head_rules: Rules = [(rf"decoder\.{p}", f"decode_head.{r}") for p, r in _HEAD_BACK]
    head = rename({k: v for k, v in state.items() if k.startswith("decoder.")}, head_rules, "transeg SegDeformer")
    return {**{f"backbone.{k}": v for k, v in mit.items()}, **head}


# --------------------------------------------------------------------------- config
def segdeformer_model_config(official: StateDict, state: StateDict, source: str) -> ModelConfig:
    """The model config of an official checkpoint (``official``: its keys; ``state``: converted)."""
    if "decoder.fuse.conv.weight" not in state or "decoder.classifier.weight" not in state:
        raise TransegError(f"{source}: not a MiT + SegDeformerHead3 checkpoint (head weights missing)")
    plain = segformer.infer_mit_config(state, source)
    encoder = dataclasses.replace(plain, norm_eps=MMSEG_MIT_EPS, embed_norm_eps=MMSEG_MIT_EPS) \
        if is_mmseg_mit(official) else plain
    decoder = SegDeformerConfig(mode="released", channels=state["decoder.fuse.conv.weight"].shape[0])
    config = ModelConfig(encoder="mit", encoder_config=plain, decoder="segdeformer", decoder_config=decoder,
                         num_classes=state["decoder.classifier.weight"].shape[0])
    return dataclasses.replace(config, name=find_variant(config), encoder_config=encoder)


def load_official(path: Path, state: StateDict) -> Segmentor:
    """An official SegDeformer checkpoint (MiT + ``SegDeformerHead3``)."""
    converted = official_to_transeg(state)
    return build_with_state(segdeformer_model_config(state, converted, str(path)), converted, str(path))


FORMATS = Formats(checkpoints=(CheckpointFormat("official SegDeformer", is_segdeformer_state, load_official),))
