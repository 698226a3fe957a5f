"""Reading ViT backbones and Segmenter checkpoints (the key conversions are in ``weights/vit.py``).

* Encoder weights for a ViT model (``create_model(..., encoder_weights=PATH)``): a transformers
  ViT/DeiT directory, a timm ``.pth``/``.safetensors``, an MMSegmentation ViT backbone, or the
  encoder of any Segmenter checkpoint (official, MMSegmentation, transeg). Position embeddings
  learned on another grid are resized bilinearly, as the official Segmenter does.
* Whole models (``load_model``): an official Segmenter ``checkpoint.pth`` (its ``variant.yml``
  beside it is read when present), or an MMSegmentation Segmenter checkpoint (mask transformer or
  linear head). Head counts cannot be read from weights: they come from ``variant.yml`` or are
  width // 64, as in every published Segmenter.

Official Segmenter builds every LayerNorm with PyTorch's default eps (1e-5); MMSegmentation's ViT
uses 1e-6 and resizes position embeddings bicubically; the loaded configs say so, so that the
loaded model computes what the checkpoint's own code computes.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Any

import yaml

from transeg.errors import TransegError
from transeg.models.config import IMAGENET_MEAN, IMAGENET_STD, ModelConfig
from transeg.models.decoders.linear import LinearDecoderConfig
from transeg.models.decoders.mask_transformer import MaskTransformerConfig
from transeg.models.encoders.base import Encoder
from transeg.models.encoders.vit import ViTConfig
from transeg.models.segmentor import Segmentor
from transeg.models.zoo import VIT_MEAN, VIT_STD, find_variant
from transeg.weights import vit as convert_vit
from transeg.weights.files import StateDict, read_json, read_safetensors, read_torch_file, read_weights
from transeg.weights.formats import CheckpointFormat, Formats, backbone_only
from transeg.weights.keys import build_with_state, preview_keys, strip_to_encoder

NORMALIZATION = {"vit": (VIT_MEAN, VIT_STD), "deit": (IMAGENET_MEAN, IMAGENET_STD)}
OFFICIAL_NORM_EPS = 1e-5  # nn.LayerNorm's default, used throughout the official code
MMSEG_NORM_EPS = 1e-6  # backbone_norm_cfg = dict(type='LN', eps=1e-6)


# --------------------------------------------------------------------------- recognising formats
def is_segmenter_state(state: StateDict) -> bool:
    """An official / transeg Segmenter (``encoder.pos_embed``) or an MMSegmentation ViT model."""
    return "encoder.pos_embed" in state or (
        "backbone.pos_embed" in state and any(k.startswith("backbone.layers.") for k in state)
    )


def is_vit_backbone(state: StateDict) -> bool:
    """A bare ViT backbone: timm (``pos_embed``, ``blocks.*``) or MMSegmentation (``layers.*``)."""
    return "pos_embed" in state and "cls_token" in state


def vit_encoder_state(state: StateDict, source: str) -> StateDict:
    """The encoder (transeg keys, no ``encoder.`` prefix) of any state dict holding a ViT."""
    if "encoder.pos_embed" in state:  # official Segmenter or transeg
        encoder = {k: v for k, v in state.items() if k.startswith("encoder.")}
        return strip_to_encoder(convert_vit.official_segmenter_to_transeg(encoder))
    if "backbone.pos_embed" in state or ("pos_embed" in state and any(k.startswith("layers.") for k in state)):
        backbone = {k: v for k, v in state.items() if not k.startswith(("decode_head.", "auxiliary_head."))}
        return convert_vit.mmseg_vit_to_transeg(backbone)
    if any(k.startswith(("vit.", "deit.", "embeddings.")) for k in state):
        return convert_vit.hf_vit_to_transeg(state)
    if "pos_embed" in state or "cls_token" in state:
        return convert_vit.timm_to_transeg(state)
    raise TransegError(f"{source}: no ViT weights recognised (first keys: {preview_keys(list(state), 3)})")


# --------------------------------------------------------------------------- encoder weights
def _read_hf_vit_dir(directory: Path) -> tuple[StateDict, dict[str, Any]]:
    config_path = directory / "config.json"
    config = read_json(config_path)
    if config.get("model_type") not in ("vit", "deit"):
        raise TransegError(f"{config_path}: model_type {config.get('model_type')!r} is not a ViT or DeiT")
    return convert_vit.hf_vit_to_transeg(read_weights(directory)), config


def read_vit_encoder_state(path: str | os.PathLike[str], encoder: Encoder) -> StateDict:
    """Weights for the ViT ``encoder`` from any supported file (see the module docstring), with
    ``pos_embed`` resized to the encoder's grid. A transformers config whose head count differs
    from the encoder's is an error (head counts are invisible in the weights)."""
    path = Path(path)
    if not path.exists():
        raise TransegError(f"{path}: no such file or directory")
    old_grid = None
    if path.is_dir():
        state, hf = _read_hf_vit_dir(path)
        heads = hf.get("num_attention_heads")
        if heads is not None and heads != encoder.config.heads:
            raise TransegError(f"{path}: num_attention_heads {heads} in config.json, the model has "
                               f"{encoder.config.heads} heads")
        if "image_size" in hf and "patch_size" in hf:
            size = hf["image_size"]
            h, w = (size, size) if isinstance(size, int) else size
            old_grid = (h // hf["patch_size"], w // hf["patch_size"])
    elif path.suffix == ".safetensors":
        state = vit_encoder_state(read_safetensors(path)[0], str(path))
    else:
        state = vit_encoder_state(read_torch_file(path), str(path))
    return convert_vit.fit_pos_embed(state, encoder.grid, encoder.num_extra_tokens, str(path), old_grid)


# --------------------------------------------------------------------------- whole checkpoints
class _VariantLoader(yaml.SafeLoader):
    """``yaml.safe_load`` plus ``!!python/tuple`` (as ``yaml.dump`` writes the official image_size)."""


_VariantLoader.add_constructor("tag:yaml.org,2002:python/tuple", lambda loader, node: loader.construct_sequence(node))


def read_variant(path: Path) -> dict[str, Any]:
    """``net_kwargs`` of the official ``variant.yml``, with the decoder's kwargs under ``decoder``."""
    try:
        variant = yaml.load(path.read_text(), Loader=_VariantLoader) or {}
    except yaml.YAMLError as exc:
        raise TransegError(f"{path}: not valid YAML ({str(exc).splitlines()[0]})") from None
    net = variant.get("net_kwargs") if isinstance(variant, dict) else None
    if not isinstance(net, dict):
        raise TransegError(f"{path}: no net_kwargs mapping")
    net = dict(net)
    decoder = net.get("decoder") or variant.get("decoder_kwargs") or {}
    net["decoder"] = dict(decoder) if isinstance(decoder, dict) else {}
    return net


def _block_count(state: StateDict, prefix: str) -> int:
    indices = {int(k[len(prefix):].split(".")[0]) for k in state if k.startswith(prefix)}
    return 1 + max(indices) if indices else 0


def _check(source: str, key: str, declared: Any, found: Any) -> None:
    if declared is not None and declared != found:
        raise TransegError(f"{source}: {key} is {declared!r} but the weights say {found!r}")


def infer_vit_config(state: StateDict, source: str, *, norm_eps: float, pos_interpolation: str = "bilinear",
                     variant: dict[str, Any] | None = None) -> ViTConfig:
    """The encoder config of a transeg-keyed Segmenter state dict (shapes, plus ``variant`` values)."""
    variant = variant or {}
    if "encoder.patch_embed.proj.weight" not in state:
        raise TransegError(f"{source}: no encoder.patch_embed.proj.weight: not a ViT checkpoint")
    proj = state["encoder.patch_embed.proj.weight"]
    dim, in_channels, patch = proj.shape[0], proj.shape[1], proj.shape[-1]
    depth = _block_count(state, "encoder.blocks.")
    distilled = "encoder.dist_token" in state
    for key, found in (("patch_size", patch), ("d_model", dim), ("n_layers", depth)):
        _check(source, key, variant.get(key), found)
    _check(source, "distilled", variant.get("distilled"), distilled)
    extra = 2 if distilled else 1
    grid = convert_vit.pos_embed_grid(state["encoder.pos_embed"], extra, source)
    image_size: int | tuple[int, int] = grid[0] * patch
    if variant.get("image_size") is not None:
        size = variant["image_size"]
        h, w = (size, size) if isinstance(size, int) else (int(size[0]), int(size[1]))
        _check(source, "image_size // patch_size", (h // patch, w // patch), grid)
        image_size = h if h == w else (h, w)
    return ViTConfig(
        patch_size=patch, embed_dim=dim, depth=depth, heads=variant.get("n_heads") or max(1, dim // 64),
        mlp_ratio=state["encoder.blocks.0.mlp.fc1.weight"].shape[0] // dim, image_size=image_size,
        distilled=distilled, drop_path_rate=float(variant.get("drop_path_rate", 0.1)), norm_eps=norm_eps,
        in_channels=in_channels, pos_interpolation=pos_interpolation,
    )


def infer_decoder_config(state: StateDict, source: str, encoder_dim: int,
                         defaults: MaskTransformerConfig) -> tuple[str, Any, int]:
    """(decoder name, config, class count) of a transeg-keyed Segmenter state dict."""
    if "decoder.head.weight" in state:
        return "linear", LinearDecoderConfig(), state["decoder.head.weight"].shape[0]
    if "decoder.cls_emb" not in state:
        raise TransegError(f"{source}: no Segmenter decoder weights (decoder.head or decoder.cls_emb) found")
    _, num_classes, d = state["decoder.cls_emb"].shape
    config = dataclasses.replace(
        defaults, n_layers=_block_count(state, "decoder.blocks."), d_model=None if d == encoder_dim else d,
        mlp_ratio=state["decoder.blocks.0.mlp.fc1.weight"].shape[0] // d,
    )
    return "mask_transformer", config, num_classes


def _vit_shape(e: ViTConfig) -> tuple:
    """What identifies a ViT variant (eps, image size and regularisation aside)."""
    return e.patch_size, e.embed_dim, e.depth, e.heads, e.mlp_ratio, e.distilled


def _decoder_shape(c: Any) -> tuple:
    """What identifies a Segmenter decoder variant (regularisation aside)."""
    return (c.n_layers, c.d_model, c.heads, c.mlp_ratio) if isinstance(c, MaskTransformerConfig) else ()


def _segmenter_config(state: StateDict, source: str, encoder: ViTConfig, decoder_defaults: MaskTransformerConfig,
                      mean_std: tuple[tuple[float, ...], tuple[float, ...]]) -> ModelConfig:
    decoder, decoder_config, num_classes = infer_decoder_config(state, source, encoder.embed_dim, decoder_defaults)
    config = ModelConfig(encoder="vit", encoder_config=encoder, decoder=decoder, decoder_config=decoder_config,
                         num_classes=num_classes, mean=mean_std[0], std=mean_std[1])
    return dataclasses.replace(config, name=find_variant(config, _vit_shape, _decoder_shape))


def load_official_segmenter(path: Path, state: StateDict) -> Segmentor:
    """An official Segmenter checkpoint's ``model`` dict (+ ``variant.yml`` beside it, if any)."""
    state = convert_vit.official_segmenter_to_transeg(state)
    variant_path = path.parent / "variant.yml"
    variant = read_variant(variant_path) if variant_path.is_file() else {}
    source = str(variant_path if variant else path)
    decoder_kwargs = variant.get("decoder", {})
    name = decoder_kwargs.get("name")
    if name is not None and name not in ("linear", "mask_transformer"):
        raise TransegError(f"{variant_path}: decoder {name!r} is not supported (linear, mask_transformer)")
    norm = variant.get("normalization") or ("deit" if "encoder.dist_token" in state else "vit")
    if norm not in NORMALIZATION:
        raise TransegError(f"{variant_path}: normalization {norm!r} is not one of {sorted(NORMALIZATION)}")
    encoder = infer_vit_config(state, source, norm_eps=OFFICIAL_NORM_EPS, variant=variant)
    defaults = MaskTransformerConfig(dropout=float(decoder_kwargs.get("dropout", 0.1)),
                                     drop_path_rate=float(decoder_kwargs.get("drop_path_rate", 0.0)))
    config = _segmenter_config(state, source, encoder, defaults, NORMALIZATION[norm])
    _check(source, "n_cls", variant.get("n_cls"), config.num_classes)
    return build_with_state(config, state, str(path))


def load_mmseg_segmenter(path: Path, state: StateDict) -> Segmentor:
    """An MMSegmentation Segmenter checkpoint (ViT + mask transformer or linear FCN head)."""
    state = convert_vit.mmseg_segmenter_to_transeg(state)
    encoder = infer_vit_config(state, str(path), norm_eps=MMSEG_NORM_EPS, pos_interpolation="bicubic")
    # SegmenterMaskTransformerHead defaults: drop_path_rate 0.1, drop_rate 0.
    defaults = MaskTransformerConfig(dropout=0.0, drop_path_rate=0.1)
    config = _segmenter_config(state, str(path), encoder, defaults, (VIT_MEAN, VIT_STD))
    return build_with_state(config, state, str(path))


def load_segmenter(path: Path, state: StateDict) -> Segmentor:
    """A Segmenter model from a checkpoint ``is_segmenter_state`` accepted."""
    if "encoder.pos_embed" in state:
        return load_official_segmenter(path, state)
    return load_mmseg_segmenter(path, state)


FORMATS = Formats(
    checkpoints=(
        CheckpointFormat("Segmenter (official, MMSegmentation, transeg keys)", is_segmenter_state, load_segmenter),
        CheckpointFormat("ViT backbone", is_vit_backbone, backbone_only("a ViT backbone has no decoder")),
    ),
    encoders={"vit": read_vit_encoder_state},
)
