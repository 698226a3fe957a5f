"""Pure state-dict conversions between official SegDeformer checkpoints and transeg's keys.

The official checkpoints (lygsbw/segdeformer, an MMSegmentation 0.29 fork) hold a MiT ``backbone.*``
and a ``SegDeformerHead3`` ``decode_head.*``. Their configs build MMSegmentation's own
``MixVisionTransformer`` from ``mit_b*_mm.pth``, so the backbone keys are MMSegmentation's
(``layers.{s}.0`` patch embedding, ``layers.{s}.1.{j}`` blocks with a fused ``attn.attn.in_proj_*``
and ``ffn.layers.{0,1,4}``, ``layers.{s}.2`` stage norm); the official SegFormer names
(``block{s}.{j}.attn.q`` …) are read too.

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
import re
from pathlib import Path

import torch

from transeg.errors import TransegError
from transeg.models.config import ModelConfig
from transeg.models.decoders.segdeformer.config import SegDeformerConfig
from transeg.models.segmentor import Segmentor
from transeg.models.zoo import find_variant
from transeg.weights import segformer
from transeg.weights.files import StateDict
from transeg.weights.formats import CheckpointFormat, Formats
from transeg.weights.keys import Rules, build_with_state, preview_keys, rename

MMSEG_MIT_EPS = 1e-6

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


def is_mmseg_mit(state: StateDict) -> bool:
    """MMSegmentation MiT backbone keys (``layers.{s}.{0,1,2}``), with or without ``backbone.``."""
    return any(re.match(r"(backbone\.)?layers\.\d+\.0\.projection\.", k) for k in state)


# --------------------------------------------------------------------------- MMSegmentation MiT
def mmseg_mit_to_official(state: StateDict) -> StateDict:
    """MMSegmentation MiT keys -> official SegFormer keys (the inverse of its ``mit2mmseg.py``):
    ``in_proj`` is split into ``q`` and ``kv``, the 1x1-conv FFN weights become Linear weights."""
    out: StateDict = {}
    for key, value in state.items():
        m = re.fullmatch(r"layers\.(\d+)\.(\d)\.(.+)", key)
        if m is None:
            out[key] = value
            continue
        stage, part, rest = int(m.group(1)) + 1, m.group(2), m.group(3)
        if part == "0":  # patch embedding
            out[f"patch_embed{stage}.{rest.replace('projection.', 'proj.')}"] = value
        elif part == "2":
            out[f"norm{stage}.{rest}"] = value
        elif mb := re.fullmatch(r"(\d+)\.attn\.attn\.in_proj_(weight|bias)", rest):
            prefix, dim = f"block{stage}.{mb.group(1)}.attn", value.shape[0] // 3
            out[f"{prefix}.q.{mb.group(2)}"] = value[:dim]
            out[f"{prefix}.kv.{mb.group(2)}"] = value[dim:]
        else:
            rest = rest.replace("attn.attn.out_proj.", "attn.proj.")
            for theirs, ours in (("ffn.layers.0.", "mlp.fc1."), ("ffn.layers.1.", "mlp.dwconv.dwconv."),
                                 ("ffn.layers.4.", "mlp.fc2.")):
                rest = rest.replace(theirs, ours)
            if re.search(r"mlp\.fc[12]\.weight$", rest):
                value = value.flatten(1)  # (out, in, 1, 1) -> (out, in)
            out[f"block{stage}.{rest}"] = value
    return out


def official_mit_to_mmseg(state: StateDict) -> StateDict:
    """Official SegFormer MiT keys -> MMSegmentation's (what ``mit2mmseg.py`` does)."""
    out: StateDict = {}
    for key, value in state.items():
        if m := re.fullmatch(r"patch_embed(\d)\.(proj|norm)\.(\w+)", key):
            part = "projection" if m.group(2) == "proj" else "norm"
            out[f"layers.{int(m.group(1)) - 1}.0.{part}.{m.group(3)}"] = value
        elif m := re.fullmatch(r"norm(\d)\.(\w+)", key):
            out[f"layers.{int(m.group(1)) - 1}.2.{m.group(2)}"] = value
        elif m := re.fullmatch(r"block(\d)\.(\d+)\.(.+)", key):
            prefix, rest = f"layers.{int(m.group(1)) - 1}.1.{m.group(2)}", m.group(3)
            if mq := re.fullmatch(r"attn\.q\.(weight|bias)", rest):
                kv = state[f"block{m.group(1)}.{m.group(2)}.attn.kv.{mq.group(1)}"]
                out[f"{prefix}.attn.attn.in_proj_{mq.group(1)}"] = torch.cat([value, kv], dim=0)
            elif not rest.startswith("attn.kv."):
                rest = rest.replace("attn.proj.", "attn.attn.out_proj.")
                for ours, theirs in (("mlp.fc1.", "ffn.layers.0."), ("mlp.dwconv.dwconv.", "ffn.layers.1."),
                                     ("mlp.fc2.", "ffn.layers.4.")):
                    rest = rest.replace(ours, theirs)
                if re.fullmatch(r"ffn\.layers\.[04]\.weight", rest):
                    value = value[:, :, None, None]
                out[f"{prefix}.{rest}"] = value
        else:
            raise TransegError(f"official MiT weights: unexpected key {key!r}")
    return out


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
    encoder_rules: Rules = [(rf"encoder\.{p}", r) for p, r in _TRANSEG_TO_OFFICIAL_MIT]
    mit = rename({k: v for k, v in state.items() if k.startswith("encoder.")}, encoder_rules, "transeg MiT encoder")
    mit = _one_based_stages(mit)
    if backbone == "mmseg":
        mit = official_mit_to_mmseg(mit)
    head_rules: Rules = [(rf"decoder\.{p}", f"decode_head.{r}") for p, r in _HEAD_BACK]
    head = rename({k: v for k, v in state.items() if k.startswith("decoder.")}, head_rules, "transeg SegDeformer")
    return {**{f"backbone.{k}": v for k, v in mit.items()}, **head}


_TRANSEG_TO_OFFICIAL_MIT: Rules = [
    (r"stages\.(\d+)\.patch_embed\.(proj|norm)\.(\w+)", r"patch_embed{\1}.\2.\3"),
    (r"stages\.(\d+)\.blocks\.(\d+)\.mlp\.dwconv\.(\w+)", r"block{\1}.\2.mlp.dwconv.dwconv.\3"),
    (r"stages\.(\d+)\.blocks\.(\d+)\.(.+)", r"block{\1}.\2.\3"),
    (r"stages\.(\d+)\.norm\.(\w+)", r"norm{\1}.\2"),
]


def _one_based_stages(state: StateDict) -> StateDict:
    """Turn the ``{i}`` stage placeholders of ``_TRANSEG_TO_OFFICIAL_MIT`` into 1-based numbers."""
    return {re.sub(r"\{(\d+)\}", lambda m: str(int(m.group(1)) + 1), k): v for k, v in state.items()}


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
