"""Pure state-dict conversions onto transeg's ViT / Segmenter keys.

transeg keys (the project's file format), which are timm's and the official Segmenter's names:

* ``encoder.{cls_token,dist_token,pos_embed}``, ``encoder.patch_embed.proj.*``,
  ``encoder.blocks.{i}.{norm1,attn.qkv,attn.proj,norm2,mlp.fc1,mlp.fc2}.*``, ``encoder.norm.*``
* linear decoder: ``decoder.head.*``
* mask transformer: ``decoder.{proj_dec,cls_emb,decoder_norm,mask_norm,proj_patch,proj_classes}``,
  ``decoder.blocks.{i}.*`` (named as the encoder blocks)

Foreign formats: timm ViT/DeiT backbones; transformers ``ViT*``/``DeiT*`` (4.x names as written by
``save_pretrained``, 5.x in-memory names); MMSegmentation ViT backbones and Segmenter checkpoints
(``backbone.*``, ``decode_head.*``); official Segmenter checkpoints (``encoder.*``, ``decoder.*``).
Encoder-only functions return keys without the ``encoder.`` prefix. A key no rule knows is an
error naming it; only classification heads and unused heads are dropped.
"""

from __future__ import annotations

import math
import re

import torch

from transeg.errors import TransegError
from transeg.models.layers.pos_embed import resize_pos_embed
from transeg.weights.files import StateDict
from transeg.weights.keys import Rules, preview_keys, rename

_BLOCK = r"(norm1|attn\.qkv|attn\.proj|norm2|mlp\.fc1|mlp\.fc2)\.(weight|bias)"
_TRANSEG_ENCODER: Rules = [
    (r"(cls_token|dist_token|pos_embed)", r"\1"),
    (r"patch_embed\.proj\.(weight|bias)", r"patch_embed.proj.\1"),
    (rf"blocks\.(\d+)\.{_BLOCK}", r"blocks.\1.\2.\3"),
    (r"norm\.(weight|bias)", r"norm.\1"),
]
_CLASSIFIER_HEADS: Rules = [(r"(head|head_dist|pre_logits\.fc)\.(weight|bias)", None)]


# --------------------------------------------------------------------------- timm
def timm_to_transeg(state: StateDict) -> StateDict:
    """A timm ``VisionTransformer`` / ``VisionTransformerDistilled`` backbone (encoder keys).

    The names are transeg's; the classification heads (``head``, ``head_dist``, ``pre_logits``)
    are dropped.
    """
    return rename(state, [*_TRANSEG_ENCODER, *_CLASSIFIER_HEADS], "timm ViT checkpoint")


# --------------------------------------------------------------------------- official Segmenter
_SEGMENTER_DECODER: Rules = [
    (r"decoder\.head\.(weight|bias)", r"decoder.head.\1"),
    (r"decoder\.(cls_emb|proj_patch|proj_classes)", r"decoder.\1"),
    (r"decoder\.(proj_dec|decoder_norm|mask_norm)\.(weight|bias)", r"decoder.\1.\2"),
    (rf"decoder\.blocks\.(\d+)\.{_BLOCK}", r"decoder.blocks.\1.\2.\3"),
]


def official_segmenter_to_transeg(state: StateDict) -> StateDict:
    """An official Segmenter ``checkpoint.pth`` ``model`` dict (the names are transeg's; the
    encoder's unused ImageNet heads ``encoder.head``/``encoder.head_dist`` are dropped)."""
    encoder_rules = [(f"encoder\\.{p}", None if r is None else f"encoder.{r}")
                     for p, r in [*_TRANSEG_ENCODER, *_CLASSIFIER_HEADS]]
    return rename(state, [*encoder_rules, *_SEGMENTER_DECODER], "official Segmenter checkpoint")


# --------------------------------------------------------------------------- transformers
# Block entries: 4.x names (as ``save_pretrained`` writes them) and 5.x in-memory names.
_HF_BLOCK = {
    "layernorm_before": "norm1",
    "attention.output.dense": "attn.proj",
    "attention.o_proj": "attn.proj",
    "layernorm_after": "norm2",
    "intermediate.dense": "mlp.fc1",
    "output.dense": "mlp.fc2",
    "mlp.fc1": "mlp.fc1",
    "mlp.fc2": "mlp.fc2",
}
_HF_QKV = {
    "attention.attention.query": 0, "attention.attention.key": 1, "attention.attention.value": 2,
    "attention.q_proj": 0, "attention.k_proj": 1, "attention.v_proj": 2,
}
_HF_OTHER: Rules = [
    (r"embeddings\.cls_token", "cls_token"),
    (r"embeddings\.distillation_token", "dist_token"),
    (r"embeddings\.position_embeddings", "pos_embed"),
    (r"embeddings\.patch_embeddings\.projection\.(weight|bias)", r"patch_embed.proj.\1"),
    (r"layernorm\.(weight|bias)", r"norm.\1"),
    (r"(pooler\.dense|classifier|cls_classifier|distillation_classifier)\.(weight|bias)", None),
    (r"embeddings\.mask_token", None),  # ViTModel(use_mask_token=True), for masked image modelling
]
_HF_LAYER = re.compile(r"(?:encoder\.layer|layers)\.(\d+)\.(.+)\.(weight|bias)")


def hf_vit_to_transeg(state: StateDict) -> StateDict:
    """transformers ``ViTModel``/``ViTForImageClassification``/``DeiT*`` (encoder keys); query, key
    and value are fused into ``attn.qkv``."""
    prefixes = ("vit.", "deit.")
    state = {next((k.removeprefix(p) for p in prefixes if k.startswith(p)), k): v for k, v in state.items()}
    qkv: dict[str, list[torch.Tensor | None]] = {}
    rest: StateDict = {}
    out: StateDict = {}
    unknown = []
    for key, value in state.items():
        m = _HF_LAYER.fullmatch(key)
        if m is None:
            rest[key] = value
        elif m[2] in _HF_QKV:
            qkv.setdefault(f"blocks.{m[1]}.attn.qkv.{m[3]}", [None, None, None])[_HF_QKV[m[2]]] = value
        elif m[2] in _HF_BLOCK:
            out[f"blocks.{m[1]}.{_HF_BLOCK[m[2]]}.{m[3]}"] = value
        else:
            unknown.append(key)
    if unknown:
        raise TransegError(f"transformers ViT checkpoint: unexpected key(s) {preview_keys(unknown)}")
    out.update(rename(rest, _HF_OTHER, "transformers ViT checkpoint"))
    for target, parts in qkv.items():
        if any(p is None for p in parts):
            raise TransegError(f"transformers ViT checkpoint: {target} lacks its query, key or value part")
        out[target] = torch.cat(parts, dim=0)  # type: ignore[arg-type]
    return out


# --------------------------------------------------------------------------- MMSegmentation
# (mmseg TransformerEncoderLayer entry, transeg block entry); each with .weight and .bias
_MMSEG_LAYER = [
    ("ln1", "norm1"),
    ("attn.attn.out_proj", "attn.proj"),
    ("ln2", "norm2"),
    ("ffn.layers.0.0", "mlp.fc1"),
    ("ffn.layers.1", "mlp.fc2"),
]


def _mmseg_layer_rules(theirs: str, ours: str) -> Rules:
    """Rules for ``{theirs}.{i}.*`` mmseg layers onto ``{ours}.{i}.*`` transeg blocks."""
    rules: Rules = [(rf"{theirs}\.(\d+)\.attn\.attn\.in_proj_(weight|bias)", rf"{ours}.\1.attn.qkv.\2")]
    for mm, ts in _MMSEG_LAYER:
        rules.append((rf"{theirs}\.(\d+)\.{re.escape(mm)}\.(weight|bias)", rf"{ours}.\1.{ts}.\2"))
    return rules


_MMSEG_BACKBONE: Rules = [
    (r"(cls_token|pos_embed)", r"\1"),
    (r"patch_embed\.projection\.(weight|bias)", r"patch_embed.proj.\1"),
    *_mmseg_layer_rules("layers", "blocks"),
    (r"ln1\.(weight|bias)", r"norm.\1"),  # final_norm=True
]


def mmseg_vit_to_transeg(state: StateDict) -> StateDict:
    """An MMSegmentation ``VisionTransformer`` backbone (with or without the ``backbone.``
    prefix; encoder keys). Its ``pos_embed`` holds the class token's entry and the grid."""
    state = {k.removeprefix("backbone."): v for k, v in state.items()}
    return rename(state, [*_MMSEG_BACKBONE, *_CLASSIFIER_HEADS], "MMSegmentation ViT checkpoint")


def mmseg_segmenter_to_transeg(state: StateDict) -> StateDict:
    """An MMSegmentation Segmenter checkpoint: ViT backbone + ``SegmenterMaskTransformerHead``, or
    + ``FCNHead(num_convs=0)`` (the linear decoder, a 1x1 ``conv_seg``). The mask head's bias-free
    ``patch_proj``/``classes_proj`` Linears are transposed into ``proj_patch``/``proj_classes``;
    its unused ``conv_seg`` is dropped."""
    backbone = {k: v for k, v in state.items() if k.startswith("backbone.")}
    head = {k.removeprefix("decode_head."): v for k, v in state.items() if k.startswith("decode_head.")}
    other = sorted(set(state) - set(backbone) - {f"decode_head.{k}" for k in head})
    if other:
        raise TransegError(f"MMSegmentation Segmenter checkpoint: unexpected key(s) {preview_keys(other)}")
    out = {f"encoder.{k}": v for k, v in mmseg_vit_to_transeg(backbone).items()}
    if "cls_emb" in head:
        rules: Rules = [
            (r"dec_proj\.(weight|bias)", r"decoder.proj_dec.\1"),
            (r"cls_emb", "decoder.cls_emb"),
            *_mmseg_layer_rules("layers", "decoder.blocks"),
            (r"(decoder_norm|mask_norm)\.(weight|bias)", r"decoder.\1.\2"),
            (r"patch_proj\.weight", "decoder.proj_patch"),
            (r"classes_proj\.weight", "decoder.proj_classes"),
            (r"conv_seg\.(weight|bias)", None),
        ]
        converted = rename(head, rules, "MMSegmentation Segmenter head")
        for key in ("decoder.proj_patch", "decoder.proj_classes"):
            if key in converted:
                converted[key] = converted[key].t().contiguous()  # Linear: x @ W.T; official: x @ W
    else:
        converted = rename(head, [(r"conv_seg\.(weight|bias)", r"decoder.head.\1")],
                           "MMSegmentation Segmenter head (FCNHead, num_convs=0)")
        if "decoder.head.weight" in converted:  # (K, D, 1, 1) conv -> (K, D) Linear
            converted["decoder.head.weight"] = converted["decoder.head.weight"].flatten(1)
    out.update(converted)
    return out


# --------------------------------------------------------------------------- position embeddings
def pos_embed_grid(pos_embed: torch.Tensor, num_extra_tokens: int, source: str) -> tuple[int, int]:
    """The (square) grid of a checkpoint's ``pos_embed`` (1, E + n, D); n must be a square."""
    n = pos_embed.shape[1] - num_extra_tokens
    side = math.isqrt(max(n, 0))
    if n <= 0 or side * side != n:
        raise TransegError(f"{source}: pos_embed {tuple(pos_embed.shape)} with {num_extra_tokens} extra token(s) "
                           "does not hold a square grid; give the size it was learned at")
    return side, side


def fit_pos_embed(state: StateDict, grid: tuple[int, int], num_extra_tokens: int, source: str,
                  old_grid: tuple[int, int] | None = None, mode: str = "bilinear") -> StateDict:
    """Encoder ``state`` with ``pos_embed`` resized (bilinear, as the official Segmenter) to ``grid``.

    ``old_grid`` defaults to the square grid its length implies. A checkpoint with another count of
    extra tokens (class token, DeiT distillation token) than the model is an error saying which.
    """
    pos = state.get("pos_embed")
    if pos is None:
        return state
    theirs = 2 if "dist_token" in state else 1
    if theirs != num_extra_tokens:
        has = "a distillation token (DeiT)" if theirs == 2 else "no distillation token"
        need = "a distilled (DeiT) model, e.g. segmenter-b16-mask-deit" if theirs == 2 else "a non-distilled model"
        raise TransegError(f"{source}: the checkpoint has {has}; it fits {need}")
    old_grid = old_grid or pos_embed_grid(pos, theirs, source)
    if tuple(old_grid) == tuple(grid):
        return state
    out = dict(state)
    with torch.no_grad():
        out["pos_embed"] = resize_pos_embed(pos.float(), tuple(old_grid), tuple(grid), theirs, mode).to(pos.dtype)
    return out
