"""MMSegmentation's MiT key layout (``mmseg/models/backbones/mit.py``), both ways, shared by the
SegFormer and SegDeformer families.

MMSegmentation names, one stage ``s`` (0-based) and block ``j``:

* ``layers.{s}.0.{projection,norm}.*``: the overlapped patch embedding;
* ``layers.{s}.1.{j}.{norm1, attn.attn.in_proj_{weight,bias} (q, k, v fused), attn.attn.out_proj.*,
  attn.sr.*, attn.norm.*, norm2, ffn.layers.{0,1,4}.*}``: fc1 and fc2 as 1x1 convs, the 3x3
  depthwise conv between them (``ffn.layers`` is a flat Sequential fc1, dwconv, GELU, dropout, fc2,
  dropout in MMSegmentation 0.x and 1.x alike);
* ``layers.{s}.2.*``: the stage-end LayerNorm.

Official SegFormer names: ``patch_embed{s+1}``, ``block{s+1}.{j}.{attn.q, attn.kv, attn.proj,
mlp.fc1, mlp.dwconv.dwconv, mlp.fc2, …}``, ``norm{s+1}``. MMSegmentation's MiT uses LayerNorm eps
1e-6 everywhere (official: 1e-5 in the patch embeddings and the spatial reduction).
"""

from __future__ import annotations

import re

import torch

from transeg.errors import TransegError
from transeg.weights.files import StateDict
from transeg.weights.keys import Rules, rename


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


_TRANSEG_TO_OFFICIAL_MIT: Rules = [
    (r"stages\.(\d+)\.patch_embed\.(proj|norm)\.(\w+)", r"patch_embed{\1}.\2.\3"),
    (r"stages\.(\d+)\.blocks\.(\d+)\.mlp\.dwconv\.(\w+)", r"block{\1}.\2.mlp.dwconv.dwconv.\3"),
    (r"stages\.(\d+)\.blocks\.(\d+)\.(.+)", r"block{\1}.\2.\3"),
    (r"stages\.(\d+)\.norm\.(\w+)", r"norm{\1}.\2"),
]


def transeg_mit_to_official(state: StateDict) -> StateDict:
    """transeg MiT encoder keys (``encoder.stages.{i}…``) -> official SegFormer keys (1-based stages)."""
    rules: Rules = [(rf"encoder\.{p}", r) for p, r in _TRANSEG_TO_OFFICIAL_MIT]
    renamed = rename(state, rules, "transeg MiT encoder")
    return {re.sub(r"\{(\d+)\}", lambda m: str(int(m.group(1)) + 1), k): v for k, v in renamed.items()}
