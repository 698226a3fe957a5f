"""Pure state-dict conversions between transeg's keys and the formats users already hold.

transeg keys (the project's file format):

* ``encoder.stages.{i}.patch_embed.{proj,norm}.*``
* ``encoder.stages.{i}.blocks.{j}.{norm1,attn.q,attn.kv,attn.sr,attn.norm,attn.proj,norm2,mlp.fc1,mlp.dwconv,
  mlp.fc2}.*``
* ``encoder.stages.{i}.norm.*``
* ``decoder.{proj.{i},fuse,norm,classifier}.*``

Foreign formats: the official SegFormer / MMSegmentation 0.x ``.pth`` (``backbone.`` prefix,
fused ``kv``, ``decode_head.linear_c{1..4}``), the ImageNet MiT backbones (``mit_b*.pth``), and
Hugging Face transformers (4.x names; 5.x in-memory names are normalised to them first).
A key that no rule knows is an error naming it: nothing is dropped silently, except the keys
known to be unused (``decode_head.conv_seg``, classification heads).
"""

from __future__ import annotations

import re

import torch

from transeg.errors import TransegError

StateDict = dict[str, torch.Tensor]
Rules = list[tuple[str, str | None]]  # (regex, replacement); None drops the key


def rename(state: StateDict, rules: Rules, source: str) -> StateDict:
    """Apply the first matching rule to every key; unknown keys raise, listing them."""
    compiled = [(re.compile(p), r) for p, r in rules]
    out: StateDict = {}
    unknown = []
    for key, value in state.items():
        for pattern, replacement in compiled:
            if pattern.fullmatch(key):
                if replacement is not None:
                    out[pattern.sub(replacement, key)] = value
                break
        else:
            unknown.append(key)
    if unknown:
        raise TransegError(f"{source}: unexpected key(s) {preview_keys(unknown)}")
    return out


def preview_keys(keys: list[str], n: int = 6) -> str:
    keys = sorted(keys)
    more = f" … and {len(keys) - n} more" if len(keys) > n else ""
    return ", ".join(keys[:n]) + more


# --------------------------------------------------------------------------- official / mmseg 0.x
_OFFICIAL_BLOCK = r"(norm1|attn\.q|attn\.kv|attn\.sr|attn\.norm|attn\.proj|norm2|mlp\.fc1|mlp\.fc2)"


def official_to_transeg(state: StateDict) -> StateDict:
    """Official SegFormer / mmseg 0.x checkpoint, or an ImageNet ``mit_b*.pth`` backbone."""
    state = {k.removeprefix("backbone."): v for k, v in state.items()}
    out: StateDict = {}
    for key, value in state.items():
        new = _official_key(key)
        if new == "":
            continue
        if new is None:
            raise TransegError(f"official SegFormer checkpoint: unexpected key {key!r}")
        out[new] = value
    return out


def _official_key(key: str) -> str | None:
    """transeg name of one official key; '' for keys dropped on purpose, None for unknown keys."""
    stage = lambda m: int(m.group(1)) - 1  # noqa: E731
    if m := re.fullmatch(r"patch_embed(\d)\.(proj|norm)\.(\w+)", key):
        return f"encoder.stages.{stage(m)}.patch_embed.{m.group(2)}.{m.group(3)}"
    if m := re.fullmatch(rf"block(\d)\.(\d+)\.{_OFFICIAL_BLOCK}\.(\w+)", key):
        return f"encoder.stages.{stage(m)}.blocks.{m.group(2)}.{m.group(3)}.{m.group(4)}"
    if m := re.fullmatch(r"block(\d)\.(\d+)\.mlp\.dwconv\.dwconv\.(\w+)", key):
        return f"encoder.stages.{stage(m)}.blocks.{m.group(2)}.mlp.dwconv.{m.group(3)}"
    if m := re.fullmatch(r"norm(\d)\.(\w+)", key):
        return f"encoder.stages.{stage(m)}.norm.{m.group(2)}"
    if m := re.fullmatch(r"decode_head\.linear_c(\d)\.proj\.(\w+)", key):
        return f"decoder.proj.{stage(m)}.{m.group(2)}"
    if m := re.fullmatch(r"decode_head\.linear_fuse\.conv\.(\w+)", key):
        return f"decoder.fuse.{m.group(1)}"
    if m := re.fullmatch(r"decode_head\.linear_fuse\.bn\.(\w+)", key):
        return f"decoder.norm.{m.group(1)}"
    if m := re.fullmatch(r"decode_head\.linear_pred\.(\w+)", key):
        return f"decoder.classifier.{m.group(1)}"
    if re.fullmatch(r"decode_head\.conv_seg\.\w+|head\.\w+", key):
        return ""  # unused BaseDecodeHead classifier / ImageNet classification head
    return None


# --------------------------------------------------------------------------- Hugging Face
# (transeg block suffix, transformers 4.x block suffix); kv is fused from key + value separately.
_HF_BLOCK = [
    ("norm1", "layer_norm_1"),
    ("attn.q", "attention.self.query"),
    ("attn.sr", "attention.self.sr"),
    ("attn.norm", "attention.self.layer_norm"),
    ("attn.proj", "attention.output.dense"),
    ("norm2", "layer_norm_2"),
    ("mlp.fc1", "mlp.dense1"),
    ("mlp.dwconv", "mlp.dwconv.dwconv"),
    ("mlp.fc2", "mlp.dense2"),
]
_HF_OTHER = [
    ("encoder.stages.{i}.patch_embed.proj", "segformer.encoder.patch_embeddings.{i}.proj"),
    ("encoder.stages.{i}.patch_embed.norm", "segformer.encoder.patch_embeddings.{i}.layer_norm"),
    ("encoder.stages.{i}.norm", "segformer.encoder.layer_norm.{i}"),
    ("decoder.proj.{i}", "decode_head.linear_c.{i}.proj"),
    ("decoder.fuse", "decode_head.linear_fuse"),
    ("decoder.norm", "decode_head.batch_norm"),
    ("decoder.classifier", "decode_head.classifier"),
]
# transformers 5.x in-memory names -> 4.x names (the names 5.x still writes with save_pretrained).
_HF5_TO_HF4: Rules = [
    (r"segformer\.stages\.(\d+)\.patch_embeddings\.(.*)", r"segformer.encoder.patch_embeddings.\1.\2"),
    (r"segformer\.stages\.(\d+)\.blocks\.(\d+)\.(.*)", r"segformer.encoder.block.\1.\2.\3"),
    (r"segformer\.stages\.(\d+)\.layer_norm\.(.*)", r"segformer.encoder.layer_norm.\1.\2"),
    (r"decode_head\.linear_projections\.(.*)", r"decode_head.linear_c.\1"),
]
_HF5_BLOCK_TO_HF4 = [
    ("attention.q_proj", "attention.self.query"),
    ("attention.k_proj", "attention.self.key"),
    ("attention.v_proj", "attention.self.value"),
    ("attention.o_proj", "attention.output.dense"),
    ("attention.sequence_reduction.sequence_reduction", "attention.self.sr"),
    ("attention.sequence_reduction.layer_norm", "attention.self.layer_norm"),
    ("layernorm_before", "layer_norm_1"),
    ("layernorm_after", "layer_norm_2"),
    ("mlp.fc1", "mlp.dense1"),
    ("mlp.fc2", "mlp.dense2"),
]


def _is_hf5(state: StateDict) -> bool:
    return any(".stages." in k or "linear_projections" in k for k in state)


def hf5_to_hf4(state: StateDict) -> StateDict:
    """Normalise transformers 5.x key names to the 4.x ones (a no-op on 4.x names)."""
    if not _is_hf5(state):
        return dict(state)
    out = {}
    for key, value in state.items():
        for pattern, replacement in _HF5_TO_HF4:
            if re.fullmatch(pattern, key):
                key = re.sub(pattern, replacement, key)
                break
        if ".encoder.block." in key:
            for new, old in _HF5_BLOCK_TO_HF4:
                key = key.replace(f".{new}.", f".{old}.")
        out[key] = value
    return out


def _hf_rules() -> Rules:
    """Rules mapping transformers 4.x keys onto transeg keys (kv handled apart)."""
    rules: Rules = []
    for ours, theirs in _HF_OTHER:
        pattern = re.escape(theirs).replace(r"\{i\}", r"(\d+)") + r"\.(\w+)"
        rules.append((pattern, ours.replace("{i}", r"\1") + (r".\2" if "{i}" in ours else r".\1")))
    for ours, theirs in _HF_BLOCK:
        pattern = r"segformer\.encoder\.block\.(\d+)\.(\d+)\." + re.escape(theirs) + r"\.(\w+)"
        rules.append((pattern, rf"encoder.stages.\1.blocks.\2.{ours}.\3"))
    return rules


_HF_KV = re.compile(r"segformer\.encoder\.block\.(\d+)\.(\d+)\.attention\.self\.(key|value)\.(\w+)")


def hf_to_transeg(state: StateDict) -> StateDict:
    """transformers ``SegformerForSemanticSegmentation`` / ``SegformerModel`` (4.x or 5.x names)."""
    state = hf5_to_hf4(state)
    if not any(k.startswith("segformer.") for k in state):  # bare SegformerModel
        state = {f"segformer.{k}": v for k, v in state.items()}
    kv_parts: dict[str, dict[str, torch.Tensor]] = {}
    rest: StateDict = {}
    for key, value in state.items():
        if m := _HF_KV.fullmatch(key):
            target = f"encoder.stages.{m.group(1)}.blocks.{m.group(2)}.attn.kv.{m.group(4)}"
            kv_parts.setdefault(target, {})[m.group(3)] = value
        else:
            rest[key] = value
    out = rename(rest, [*_hf_rules(), (r"classifier\.\w+", None)], "transformers SegFormer checkpoint")
    for target, parts in kv_parts.items():
        if set(parts) != {"key", "value"}:
            raise TransegError(f"transformers SegFormer checkpoint: {target} lacks its key or value part")
        out[target] = torch.cat([parts["key"], parts["value"]], dim=0)
    return out


def transeg_to_hf(state: StateDict) -> StateDict:
    """transeg keys -> transformers 4.x keys (which 4.x and 5.x both load)."""
    rules: Rules = []
    for ours, theirs in _HF_OTHER:
        pattern = re.escape(ours).replace(r"\{i\}", r"(\d+)") + r"\.(\w+)"
        rules.append((pattern, theirs.replace("{i}", r"\1") + (r".\2" if "{i}" in theirs else r".\1")))
    for ours, theirs in _HF_BLOCK:
        pattern = r"encoder\.stages\.(\d+)\.blocks\.(\d+)\." + re.escape(ours) + r"\.(\w+)"
        rules.append((pattern, rf"segformer.encoder.block.\1.\2.{theirs}.\3"))
    kv = re.compile(r"encoder\.stages\.(\d+)\.blocks\.(\d+)\.attn\.kv\.(\w+)")
    out: StateDict = {}
    plain: StateDict = {}
    for key, value in state.items():
        if m := kv.fullmatch(key):
            prefix = f"segformer.encoder.block.{m.group(1)}.{m.group(2)}.attention.self"
            key_part, value_part = value.chunk(2, dim=0)
            out[f"{prefix}.key.{m.group(3)}"] = key_part.contiguous()
            out[f"{prefix}.value.{m.group(3)}"] = value_part.contiguous()
        else:
            plain[key] = value
    out.update(rename(plain, rules, "transeg SegFormer model"))
    return out


def strip_to_encoder(state: StateDict) -> StateDict:
    """Keep the ``encoder.`` entries of a transeg state dict, without the prefix."""
    return {k.removeprefix("encoder."): v for k, v in state.items() if k.startswith("encoder.")}
