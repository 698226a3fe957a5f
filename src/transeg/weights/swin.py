"""Swin encoder weights: pure state-dict conversions onto transeg's Swin keys, and reading them.

transeg keys (without the ``encoder.`` prefix) are the official segmentation backbone's:
``patch_embed.{proj,norm}``, ``layers.{i}.blocks.{j}.{norm1,attn.qkv,attn.proj,
attn.relative_position_bias_table,norm2,mlp.fc1,mlp.fc2}``, ``layers.{i}.downsample.{reduction,norm}``
(the merging at the end of stage i), ``norm{i}`` (the output norms).

Formats read (``create_model(..., encoder_weights=PATH)``):

* official Swin ImageNet checkpoints (``{"model": ...}``) and timm's: the same names, with the
  classifier ``head``/``head.fc`` and the final ``norm`` dropped; timm >= 0.9 keeps the merging at
  the *start* of stages 1..3 (``layers.{i+1}.downsample``), moved back here;
* the backbone of official Swin / MMSegmentation 0.x-era segmentation checkpoints (``backbone.``
  prefix; ``decode_head``/``auxiliary_head`` ignored);
* transformers ``SwinModel`` / ``SwinForImageClassification`` / ``SwinBackbone``: 4.x names, as
  ``save_pretrained`` writes them (``attention.self.{query,key,value}``, ``intermediate.dense``, …),
  and 5.x in-memory names (``attention.{q,k,v,o}_proj``, ``mlp.fc1``, …); q, k and v are fused;
  ``SwinBackbone``'s ``hidden_states_norms.stage{i+1}`` are the output norms ``norm{i}``;
* transeg files (``encoder.`` keys).

``relative_position_index`` buffers are checked against the standard index and dropped;
``attn_mask`` buffers (resolution-dependent) are dropped. An absolute position embedding is an
error (transeg's Swin has none). Output norms a checkpoint lacks (ImageNet classifiers have
none) keep the model's initialisation (weight 1, bias 0), as in the official segmentation code.

Window size: a bias table learned for another window (e.g. a window-7 ImageNet Swin-B in a
window-12 model) is resized bicubically (align_corners=False) from (2w-1)² to (2w'-1)² rows, as
MMSegmentation's Swin does when it loads such weights. Any other mismatch (depth, width, heads)
is a TransegError naming the keys.
"""

from __future__ import annotations

import math
import os
import re
from pathlib import Path

import torch
import torch.nn.functional as F

from transeg.errors import TransegError
from transeg.models.encoders.base import Encoder
from transeg.models.encoders.swin import relative_position_index
from transeg.weights.files import StateDict, read_weights
from transeg.weights.formats import CheckpointFormat, Formats, backbone_only
from transeg.weights.keys import Rules, preview_keys, rename

_BLOCK = r"(norm1|attn\.qkv|attn\.proj|norm2|mlp\.fc1|mlp\.fc2)\.(weight|bias)"
_TRANSEG: Rules = [
    (r"patch_embed\.(proj|norm)\.(weight|bias)", r"patch_embed.\1.\2"),
    (rf"layers\.(\d+)\.blocks\.(\d+)\.{_BLOCK}", r"layers.\1.blocks.\2.\3.\4"),
    (r"layers\.(\d+)\.blocks\.(\d+)\.attn\.relative_position_bias_table",
     r"layers.\1.blocks.\2.attn.relative_position_bias_table"),
    (r"layers\.(\d+)\.downsample\.(reduction\.weight|norm\.weight|norm\.bias)", r"layers.\1.downsample.\2"),
    (r"norm(\d+)\.(weight|bias)", r"norm\1.\2"),
]
_DROPPED: Rules = [
    (r"layers\.\d+\.blocks\.\d+\.attn_mask", None),  # shift masks of the training resolution
    (r"norm\.(weight|bias)", None),  # the classifier's final norm (segmentation uses norm{i})
    (r"head(\.fc)?\.(weight|bias)", None),  # ImageNet classifier
]


def _check_index(state: StateDict, source: str) -> StateDict:
    """``state`` without its ``relative_position_index`` buffers, each checked against the
    standard index for its window size (read from the bias table beside it)."""
    out = {}
    for key, value in state.items():
        if not key.endswith("relative_position_index"):
            out[key] = value
            continue
        n = value.shape[0] if value.ndim == 2 else math.isqrt(value.numel())
        ws = math.isqrt(n)
        if ws * ws != n or not torch.equal(value.reshape(n, n).long(), relative_position_index(ws)):
            raise TransegError(f"{source}: {key} is not the standard relative position index of a "
                               f"{ws}x{ws} window")
    return out


def _reject_absolute_position(state: StateDict, source: str) -> None:
    for key in state:
        if key.endswith(("absolute_pos_embed", "position_embeddings")):
            raise TransegError(f"{source}: {key}: absolute position embeddings (ape) are not supported by "
                               "transeg's Swin")


# --------------------------------------------------------------------------- official / timm
def timm_swin_to_transeg(state: StateDict, source: str = "Swin checkpoint") -> StateDict:
    """An official Swin or timm ImageNet checkpoint, or the backbone of an official/MMSegmentation
    0.x segmentation checkpoint (``backbone.`` prefix, heads ignored), onto transeg's keys."""
    if any(k.startswith("backbone.") for k in state):
        state = {k.removeprefix("backbone."): v for k, v in state.items()
                 if not k.startswith(("decode_head.", "auxiliary_head."))}
    _reject_absolute_position(state, source)
    state = _check_index(state, source)
    merging = {int(m[1]) for k in state if (m := re.match(r"layers\.(\d+)\.downsample\.", k))}
    if merging and 0 not in merging:  # timm >= 0.9: merging at the start of stages 1..n-1
        state = {re.sub(r"^layers\.(\d+)\.downsample\.", lambda m: f"layers.{int(m[1]) - 1}.downsample.", k): v
                 for k, v in state.items()}
    return rename(state, [*_TRANSEG, *_DROPPED], source)


# --------------------------------------------------------------------------- transformers
# (transformers block suffix -> transeg block suffix); 4.x names as saved, then 5.x in-memory names.
_HF_BLOCK = {
    "layernorm_before": "norm1",
    "layernorm_after": "norm2",
    "attention.output.dense": "attn.proj",
    "attention.o_proj": "attn.proj",
    "intermediate.dense": "mlp.fc1",
    "output.dense": "mlp.fc2",
    "mlp.fc1": "mlp.fc1",
    "mlp.fc2": "mlp.fc2",
    "attention.self.relative_position_bias_table": "attn.relative_position_bias_table",
    "attention.relative_position_bias.relative_position_bias_table": "attn.relative_position_bias_table",
}
_HF_QKV = {
    "attention.self.query": 0, "attention.self.key": 1, "attention.self.value": 2,
    "attention.q_proj": 0, "attention.k_proj": 1, "attention.v_proj": 2,
}
_HF_BLOCK_KEY = re.compile(r"encoder\.layers\.(\d+)\.blocks\.(\d+)\.(.+?)(?:\.(weight|bias))?")
_HF_OTHER: Rules = [
    (r"embeddings\.patch_embeddings\.projection\.(weight|bias)", r"patch_embed.proj.\1"),
    (r"embeddings\.norm\.(weight|bias)", r"patch_embed.norm.\1"),
    (r"encoder\.layers\.(\d+)\.downsample\.(reduction\.weight|norm\.weight|norm\.bias)", r"layers.\1.downsample.\2"),
    (r"layernorm\.(weight|bias)", None),  # SwinModel's final norm (the classifier's)
    (r"classifier\.(weight|bias)", None),
    (r"embeddings\.mask_token", None),  # SwinForMaskedImageModeling
    (r"decoder\.\d+\.(weight|bias)", None),
]


def hf_swin_to_transeg(state: StateDict, source: str = "transformers Swin checkpoint") -> StateDict:
    """transformers ``SwinModel``/``SwinForImageClassification``/``SwinBackbone`` (4.x or 5.x names)."""
    state = {k.removeprefix("swin."): v for k, v in state.items()}
    _reject_absolute_position(state, source)
    state = _check_index(state, source)
    qkv: dict[str, list[torch.Tensor | None]] = {}
    out: StateDict = {}
    rest: StateDict = {}
    unknown = []
    for key, value in state.items():
        if m := re.fullmatch(r"hidden_states_norms\.stage(\d+)\.(weight|bias)", key):
            out[f"norm{int(m[1]) - 1}.{m[2]}"] = value
            continue
        m = _HF_BLOCK_KEY.fullmatch(key)
        if m is None:
            rest[key] = value
            continue
        prefix, name = f"layers.{m[1]}.blocks.{m[2]}", m[3]
        suffix = f".{m[4]}" if m[4] else ""
        if name in _HF_QKV and m[4]:
            qkv.setdefault(f"{prefix}.attn.qkv{suffix}", [None, None, None])[_HF_QKV[name]] = value
        elif name in _HF_BLOCK:
            out[f"{prefix}.{_HF_BLOCK[name]}{suffix}"] = value
        else:
            unknown.append(key)
    if unknown:
        raise TransegError(f"{source}: unexpected key(s) {preview_keys(unknown)}")
    out.update(rename(rest, _HF_OTHER, source))
    for target, parts in qkv.items():
        if any(p is None for p in parts):
            raise TransegError(f"{source}: {target} lacks its query, key or value part")
        out[target] = torch.cat(parts, dim=0)
    return out


def is_hf_swin_state(state: StateDict) -> bool:
    return any("embeddings.patch_embeddings." in k or k.startswith("hidden_states_norms.") for k in state)


def is_swin_state(state: StateDict) -> bool:
    """Holds a Swin (any supported format): relative position bias tables beside a patch embedding."""
    return any(k.endswith("relative_position_bias_table") for k in state)


# --------------------------------------------------------------------------- window size
def resize_bias_table(table: torch.Tensor, window_size: int) -> torch.Tensor:
    """((2w-1)², heads) -> ((2w'-1)², heads), bicubic over the (2w-1) x (2w-1) grid of offsets."""
    rows, heads = table.shape
    side, new_side = math.isqrt(rows), 2 * window_size - 1
    if side * side != rows:
        raise TransegError(f"a relative position bias table of {rows} rows is not square")
    grid = table.float().T.reshape(1, heads, side, side)
    grid = F.interpolate(grid, size=(new_side, new_side), mode="bicubic", align_corners=False)
    return grid.reshape(heads, -1).T.contiguous().to(table.dtype)


def fit_window(state: StateDict, window_size: int) -> StateDict:
    """``state`` with every bias table resized to ``window_size`` where it was learned for another."""
    rows = (2 * window_size - 1) ** 2
    out = dict(state)
    with torch.no_grad():
        for key, value in state.items():
            if key.endswith("relative_position_bias_table") and value.ndim == 2 and value.shape[0] != rows:
                out[key] = resize_bias_table(value, window_size)
    return out


# --------------------------------------------------------------------------- reading files
def swin_encoder_state(state: StateDict, source: str) -> StateDict:
    """The Swin encoder (transeg keys, no ``encoder.`` prefix) in a state dict of any supported format."""
    if any(k.startswith("encoder.patch_embed.") for k in state):  # transeg
        return rename({k.removeprefix("encoder."): v for k, v in state.items() if k.startswith("encoder.")},
                      _TRANSEG, source)
    if is_hf_swin_state(state):
        return hf_swin_to_transeg(state, source)
    if not is_swin_state(state):
        raise TransegError(f"{source}: no Swin weights recognised (first keys: {preview_keys(list(state), 3)})")
    return timm_swin_to_transeg(state, source)


def read_swin_encoder_state(path: str | os.PathLike[str], encoder: Encoder) -> StateDict:
    """Weights for the Swin ``encoder`` from any supported file or transformers directory, with
    bias tables resized to its window and missing output norms taken from ``encoder``."""
    path = Path(path)
    state = read_weights(path)
    state = fit_window(swin_encoder_state(state, str(path)), encoder.config.window_size)
    current = encoder.state_dict()
    for key in current:
        if re.fullmatch(r"norm\d+\.(weight|bias)", key) and key not in state:
            state[key] = current[key].clone()
    return state


FORMATS = Formats(
    checkpoints=(CheckpointFormat("Swin backbone", is_swin_state,
                                  backbone_only("a Swin checkpoint (only its backbone is read)")),),
    encoders={"swin": read_swin_encoder_state},
)
