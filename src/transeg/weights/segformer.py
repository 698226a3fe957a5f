"""SegFormer (MiT + All-MLP decoder) weights: the formats users hold, mapped onto transeg's keys.

transeg keys (the project's file format):

* ``encoder.stages.{i}.patch_embed.{proj,norm}.*``
* ``encoder.stages.{i}.blocks.{j}.{norm1,attn.q,attn.kv,attn.sr,attn.norm,attn.proj,norm2,mlp.fc1,mlp.dwconv,
  mlp.fc2}.*``
* ``encoder.stages.{i}.norm.*``
* ``decoder.{proj.{i},fuse,norm,classifier}.*``

Foreign formats: the official SegFormer ``.pth`` (NVlabs, an MMSegmentation 0.x fork: ``backbone.``
prefix, fused ``kv``, ``decode_head.linear_c{1..4}``), the checkpoints of MMSegmentation's own model
zoo (0.x and 1.x: its MiT layout, ``weights/mmseg_mit.py``, and its ``SegformerHead``, a different
head: ``decode_head.convs.{i}``, ``fusion_conv``, ``conv_seg``), the ImageNet MiT backbones
(``mit_b*.pth``), and Hugging Face transformers (4.x names; 5.x in-memory names are normalised to
them first).
A key that no rule knows is an error naming it: nothing is dropped silently, except the keys
known to be unused (``decode_head.conv_seg``, classification heads).

Also here: the transformers config of a SegFormer (both ways), the config inferred from an official
checkpoint's shapes, and MiT encoder weights for ``create_model(..., encoder_weights=PATH)``.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_file

from transeg.errors import TransegError
from transeg.models.config import ModelConfig
from transeg.models.decoders.mlp import MLPDecoderConfig
from transeg.models.decoders.mmseg_mlp import SegformerHeadConfig
from transeg.models.encoders.base import Encoder
from transeg.models.encoders.mit import MiTConfig
from transeg.models.segmentor import Segmentor
from transeg.models.zoo import MMSEG_MIT_EPS, find_variant
from transeg.weights.files import StateDict, read_json, read_safetensors, read_torch_file, read_weights, write_atomic
from transeg.weights.formats import CheckpointFormat, DirectoryFormat, Formats, backbone_only
from transeg.weights.keys import Rules, build_with_state, preview_keys, rename, strip_to_encoder
from transeg.weights.mmseg_mit import is_mmseg_mit, mmseg_mit_to_official

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


# --------------------------------------------------------------------------- MMSegmentation model zoo
# SegformerHead keys -> transeg's ``mmseg_mlp`` decoder keys
_MMSEG_HEAD: Rules = [
    (r"decode_head\.convs\.(\d+)\.(conv|bn)\.(\w+)", r"decoder.proj.\1.\2.\3"),
    (r"decode_head\.fusion_conv\.(conv|bn)\.(\w+)", r"decoder.fuse.\1.\2"),
    (r"decode_head\.conv_seg\.(weight|bias)", r"decoder.classifier.\1"),
]


def is_mmseg_segformer(state: StateDict) -> bool:
    """A MMSegmentation ``SegformerHead`` model (its zoo's SegFormer checkpoints, 0.x and 1.x)."""
    return "decode_head.fusion_conv.conv.weight" in state and "decode_head.convs.0.conv.weight" in state


def mmseg_to_transeg(state: StateDict) -> StateDict:
    """A MMSegmentation SegFormer ``state_dict`` (MiT ``backbone.*`` in MMSegmentation's or the official
    names, ``SegformerHead`` ``decode_head.*``) -> transeg keys of a ``mmseg_mlp`` model."""
    backbone = {k.removeprefix("backbone."): v for k, v in state.items() if k.startswith("backbone.")}
    head = {k: v for k, v in state.items() if k.startswith("decode_head.")}
    other = sorted(set(state) - {f"backbone.{k}" for k in backbone} - set(head))
    if other:
        raise TransegError(f"MMSegmentation SegFormer checkpoint: unexpected key(s) {preview_keys(other)}")
    if is_mmseg_mit(backbone):
        backbone = mmseg_mit_to_official(backbone)
    out = official_to_transeg(backbone)
    out.update(rename(head, _MMSEG_HEAD, "MMSegmentation SegFormer checkpoint"))
    return out


def mmseg_model_config(state: StateDict, source: str, mmseg_backbone: bool = True) -> ModelConfig:
    """The config of a converted MMSegmentation SegFormer state dict, from its shapes; LayerNorm eps
    1e-6 everywhere for a backbone in MMSegmentation's names (the official eps otherwise)."""
    if "decoder.classifier.weight" not in state:
        raise TransegError(f"{source}: no decode_head.conv_seg weights (the classifier) found")
    encoder = infer_mit_config(state, source)
    if mmseg_backbone:
        encoder = dataclasses.replace(encoder, norm_eps=MMSEG_MIT_EPS, embed_norm_eps=MMSEG_MIT_EPS)
    decoder = SegformerHeadConfig(channels=state["decoder.fuse.conv.weight"].shape[0])
    config = ModelConfig(encoder="mit", encoder_config=encoder, decoder="mmseg_mlp", decoder_config=decoder,
                         num_classes=state["decoder.classifier.weight"].shape[0])
    return dataclasses.replace(config, name=find_variant(config))


def load_mmseg(path: Path, state: StateDict) -> Segmentor:
    """A checkpoint of MMSegmentation's model zoo: MiT + ``SegformerHead``; the config from its shapes."""
    converted = mmseg_to_transeg(state)
    mmseg_backbone = is_mmseg_mit({k.removeprefix("backbone."): v for k, v in state.items()})
    return build_with_state(mmseg_model_config(converted, str(path), mmseg_backbone), converted, str(path))


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


# transformers builds every LayerNorm with the default eps, whatever its config says.
HF_LAYER_NORM_EPS = 1e-5


def hf_config_to_model_config(hf: dict[str, Any], source: str) -> ModelConfig:
    """The transeg config of a transformers SegFormer ``config.json``."""
    if hf.get("model_type") != "segformer":
        raise TransegError(f"{source}: model_type {hf.get('model_type')!r} is not a SegFormer")
    try:
        mlp_ratios = set(hf["mlp_ratios"])
        if len(mlp_ratios) != 1:
            raise TransegError(f"{source}: per-stage mlp_ratios {hf['mlp_ratios']} are not supported")
        encoder = MiTConfig(
            widths=tuple(hf["hidden_sizes"]), depths=tuple(hf["depths"]),
            heads=tuple(hf["num_attention_heads"]), sr_ratios=tuple(hf["sr_ratios"]),
            patch_sizes=tuple(hf["patch_sizes"]), strides=tuple(hf["strides"]),
            mlp_ratio=mlp_ratios.pop(), in_channels=hf.get("num_channels", 3),
            drop_path_rate=hf.get("drop_path_rate", 0.1),
            norm_eps=HF_LAYER_NORM_EPS, embed_norm_eps=HF_LAYER_NORM_EPS,
        )
        decoder = MLPDecoderConfig(embed_dim=hf["decoder_hidden_size"],
                                   dropout=hf.get("classifier_dropout_prob", 0.1))
    except KeyError as exc:
        raise TransegError(f"{source}: missing key {exc.args[0]!r}") from None
    id2label = hf.get("id2label") or {}
    num_classes = hf.get("num_labels") or len(id2label) or 2
    names = tuple(id2label[str(i)] for i in range(num_classes)) if len(id2label) == num_classes else None
    config = ModelConfig(encoder="mit", encoder_config=encoder, decoder="mlp", decoder_config=decoder,
                         num_classes=num_classes, class_names=names)
    return dataclasses.replace(config, name=find_variant(config, encoder_key=lambda c: (c.widths, c.depths)))


def model_config_to_hf_config(config: ModelConfig) -> dict[str, Any]:
    """The transformers ``config.json`` of a standard SegFormer config."""
    if config.decoder == "mmseg_mlp":
        raise TransegError(f"{config.name}: MMSegmentation's SegformerHead (a BatchNorm + ReLU on every stage "
                           "branch) has no transformers equivalent (transformers' head is NVIDIA's); "
                           "convert it to transeg format")
    if config.encoder != "mit" or config.decoder != "mlp":
        raise TransegError(f"only SegFormer models convert to transformers, not {config.name!r}")
    enc: MiTConfig = config.encoder_config
    if enc.pos_embed or not enc.mix_ffn or config.decoder_config.in_stages is not None:
        raise TransegError(f"{config.name}: transformers' Segformer has no position embeddings, plain FFN or "
                           "decoder stage selection; only the standard SegFormer converts")
    names = config.class_names or tuple(f"class_{i}" for i in range(config.num_classes))
    return {
        "architectures": ["SegformerForSemanticSegmentation"],
        "model_type": "segformer",
        "num_channels": enc.in_channels,
        "num_encoder_blocks": len(enc.depths),
        "depths": list(enc.depths),
        "sr_ratios": list(enc.sr_ratios),
        "hidden_sizes": list(enc.widths),
        "patch_sizes": list(enc.patch_sizes),
        "strides": list(enc.strides),
        "num_attention_heads": list(enc.heads),
        "mlp_ratios": [enc.mlp_ratio] * len(enc.depths),
        "hidden_act": "gelu",
        "hidden_dropout_prob": 0.0,
        "attention_probs_dropout_prob": 0.0,
        "classifier_dropout_prob": config.decoder_config.dropout,
        "drop_path_rate": enc.drop_path_rate,
        "layer_norm_eps": 1e-6,
        "decoder_hidden_size": config.decoder_config.embed_dim,
        "semantic_loss_ignore_index": 255,
        "reshape_last_stage": True,
        "id2label": {str(i): n for i, n in enumerate(names)},
        "label2id": {n: i for i, n in enumerate(names)},
    }


def infer_mit_config(state: StateDict, source: str) -> MiTConfig:
    """The MiT encoder config of a transeg-keyed state dict, read from its tensor shapes (LayerNorm
    eps as the official code). Head counts cannot be read from weights; every published MiT uses
    (1, 2, 5, 8)."""
    stages = sorted({int(k.split(".")[2]) for k in state if k.startswith("encoder.stages.")})
    if not stages:
        raise TransegError(f"{source}: no MiT encoder weights found")
    widths, depths, sr_ratios, patch_sizes = [], [], [], []
    for i in stages:
        proj = state[f"encoder.stages.{i}.patch_embed.proj.weight"]
        widths.append(proj.shape[0])
        patch_sizes.append(proj.shape[-1])
        depths.append(1 + max(int(k.split(".")[4]) for k in state if k.startswith(f"encoder.stages.{i}.blocks.")))
        sr = state.get(f"encoder.stages.{i}.blocks.0.attn.sr.weight")
        sr_ratios.append(sr.shape[-1] if sr is not None else 1)
    return MiTConfig(
        widths=tuple(widths), depths=tuple(depths), heads=MiTConfig().heads[: len(stages)],
        sr_ratios=tuple(sr_ratios), patch_sizes=tuple(patch_sizes), strides=(4, 2, 2, 2)[: len(stages)],
        mlp_ratio=state["encoder.stages.0.blocks.0.mlp.fc1.weight"].shape[0] // widths[0],
    )


def infer_segformer_config(state: StateDict, source: str) -> ModelConfig:
    """The config of a transeg-keyed SegFormer state dict, from its tensor shapes."""
    encoder = infer_mit_config(state, source)
    if "decoder.classifier.weight" not in state:
        raise TransegError(f"{source}: no decode head weights (decode_head.linear_pred) found")
    decoder = MLPDecoderConfig(embed_dim=state["decoder.fuse.weight"].shape[0])
    config = ModelConfig(encoder="mit", encoder_config=encoder, decoder="mlp", decoder_config=decoder,
                         num_classes=state["decoder.classifier.weight"].shape[0])
    return dataclasses.replace(config, name=find_variant(config))


def load_official(path: Path, state: StateDict) -> Segmentor:
    """An official SegFormer / MMSegmentation 0.x checkpoint; the config is read from its shapes."""
    state = official_to_transeg(state)
    return build_with_state(infer_segformer_config(state, str(path)), state, str(path))


def load_hf_directory(directory: Path) -> Segmentor:
    """A transformers ``SegformerForSemanticSegmentation`` directory (``config.json`` + weights)."""
    config_path = directory / "config.json"
    config = hf_config_to_model_config(read_json(config_path), source=str(config_path))
    return build_with_state(config, hf_to_transeg(read_weights(directory)), str(directory))


def save_hf_pretrained(model: Segmentor, directory: str | os.PathLike[str]) -> Path:
    """Write a transformers ``SegformerForSemanticSegmentation`` directory (4.x key names)."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    hf_config = model_config_to_hf_config(model.config)
    state = {k: v.detach().contiguous().cpu() for k, v in transeg_to_hf(model.state_dict()).items()}
    write_atomic(directory / "model.safetensors", lambda tmp: save_file(state, tmp, metadata={"format": "pt"}))
    write_atomic(directory / "config.json", lambda tmp: Path(tmp).write_text(json.dumps(hf_config, indent=2)))
    return directory


def read_mit_encoder_state(path: Path, encoder: Encoder) -> StateDict:
    """Encoder weights (transeg keys without ``encoder.``) from any file that holds a MiT encoder:
    an ImageNet ``mit_b*.pth``, an official/mmseg segmentation checkpoint, a transformers directory
    (segmentation or classification) or a transeg file."""
    if path.is_dir():
        state = read_weights(path)
        if not (path / "config.json").is_file():
            raise TransegError(f"{path}: no config.json in this transformers directory")
        encoder_only = {k: v for k, v in hf5_to_hf4(state).items() if k.startswith(("segformer.", "encoder."))}
        return strip_to_encoder(hf_to_transeg(encoder_only))
    if path.suffix == ".safetensors":
        return strip_to_encoder(read_safetensors(path)[0])
    return strip_to_encoder(official_to_transeg(read_torch_file(path)))


def _is_official(state: StateDict) -> bool:
    return any(k.startswith(("decode_head.linear_c", "backbone.")) for k in state)


def _is_hf_directory(directory: Path) -> bool:
    config_path = directory / "config.json"
    return config_path.is_file() and b'"model_type"' in config_path.read_bytes()


def _needs_config(path: Path, state: StateDict) -> Segmentor:
    raise TransegError(f"{path}: transformers weights need their config.json: pass the directory instead")


FORMATS = Formats(
    checkpoints=(
        CheckpointFormat("MMSegmentation model-zoo SegFormer (0.x, 1.x)", is_mmseg_segformer, load_mmseg),
        CheckpointFormat("official SegFormer (NVlabs)", _is_official, load_official),
        CheckpointFormat("transformers SegFormer weights without config",
                         lambda state: any(k.startswith(("segformer.", "decode_head.")) for k in state), _needs_config),
        CheckpointFormat("ImageNet MiT backbone", lambda state: any(k.startswith("patch_embed1.") for k in state),
                         backbone_only("an ImageNet MiT backbone has no decoder")),
    ),
    directories=(DirectoryFormat("transformers SegFormer directory", _is_hf_directory, load_hf_directory),),
    encoders={"mit": read_mit_encoder_state},
)
