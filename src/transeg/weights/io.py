"""Reading and writing model files, whatever format they come in.

``load_model`` recognises:

* transeg files: ``.safetensors`` with the model config in the metadata (or a ``.json`` beside);
* transformers SegFormer directories (``config.json`` + ``model.safetensors``/``pytorch_model.bin``);
* official SegFormer / MMSegmentation 0.x ``.pth`` checkpoints (the config is inferred from shapes);
* official Segmenter ``checkpoint.pth`` (+ ``variant.yml``) and MMSegmentation Segmenter checkpoints
  (``transeg.weights.segmenter``);
* official SegDeformer ``.pth`` checkpoints (MiT + ``SegDeformerHead3``; ``transeg.weights.segdeformer``);
* transeg training checkpoints (``iter_*.pt``, the model config inside).

Foreign pickles are opened with ``torch.load(weights_only=True)``: no code in them runs.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, safe_open, save_file

from transeg.errors import TransegError
from transeg.models.config import ModelConfig, build_model
from transeg.models.decoders.mlp import MLPDecoderConfig
from transeg.models.encoders.mit import MiTConfig
from transeg.models.segmentor import Segmentor
from transeg.models.zoo import ZOO
from transeg.weights import convert
from transeg.weights.hf import hf_config_to_model_config, model_config_to_hf_config

StateDict = dict[str, torch.Tensor]
CONFIG_METADATA_KEY = "transeg_config"


# --------------------------------------------------------------------------- low-level readers
def read_safetensors(path: Path) -> tuple[StateDict, dict[str, str]]:
    """Tensors and metadata of a safetensors file; a damaged file is a TransegError naming it."""
    try:
        with safe_open(str(path), framework="pt") as f:
            metadata = f.metadata() or {}
        return load_file(str(path)), metadata
    except (SafetensorError, OSError, ValueError) as exc:
        raise TransegError(f"{path}: not a readable safetensors file ({exc})") from None


def torch_load_safely(path: Path) -> Any:
    """``torch.load(weights_only=True)``: tensors and plain values only, no code runs."""
    try:
        return torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises UnpicklingError, RuntimeError, EOFError, … for bad files
        first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise TransegError(f"{path}: cannot read checkpoint safely ({first_line})") from None


def state_dict_of(obj: Any, path: Path) -> StateDict:
    """The state dict in a loaded checkpoint, unwrapping ``state_dict``/``model`` entries."""
    for key in ("state_dict", "model"):
        if isinstance(obj, dict) and isinstance(obj.get(key), dict):
            obj = obj[key]
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise TransegError(f"{path}: holds no state dict of tensors")
    return obj


def read_torch_file(path: Path) -> StateDict:
    """The state dict of a pickled checkpoint, read without executing code."""
    return state_dict_of(torch_load_safely(path), path)


def write_atomic(path: Path, write: Any) -> None:
    """Call ``write(tmp_path)`` then fsync and rename over ``path``, so a crash never leaves half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    os.close(fd)
    try:
        write(tmp)
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


# --------------------------------------------------------------------------- transeg format
def save_model(model: Segmentor, path: str | os.PathLike[str]) -> Path:
    """Write ``model`` as one safetensors file carrying its config in the metadata."""
    path = Path(path)
    if path.suffix != ".safetensors":
        path = path / "model.safetensors" if path.is_dir() or not path.suffix else path.with_suffix(".safetensors")
    tensors = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    metadata = {CONFIG_METADATA_KEY: model.config.to_json(), "format": "pt"}
    write_atomic(path, lambda tmp: save_file(tensors, tmp, metadata=metadata))
    return path


def _load_transeg(path: Path) -> Segmentor:
    state, metadata = read_safetensors(path)
    if CONFIG_METADATA_KEY in metadata:
        config = ModelConfig.from_json(metadata[CONFIG_METADATA_KEY], source=str(path))
    elif path.with_suffix(".json").is_file():
        config = ModelConfig.from_json(path.with_suffix(".json").read_text(), source=str(path.with_suffix(".json")))
    else:
        raise TransegError(f"{path}: no transeg model config in its metadata nor in {path.with_suffix('.json')}")
    return build_with_state(config, state, str(path))


def build_with_state(config: ModelConfig, state: StateDict, source: str) -> Segmentor:
    model = build_model(config)
    load_state_strict(model, state, source)
    return model.eval()


def load_state_strict(module: torch.nn.Module, state: StateDict, source: str) -> None:
    """``load_state_dict(strict=True)`` whose failure names the missing, unexpected and misshapen keys."""
    expected = module.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    misshapen = [
        f"{k} {tuple(state[k].shape)} vs {tuple(expected[k].shape)}"
        for k in sorted(set(state) & set(expected))
        if state[k].shape != expected[k].shape
    ]
    problems = []
    if missing:
        problems.append(f"missing {convert.preview_keys(missing)}")
    if unexpected:
        problems.append(f"unexpected {convert.preview_keys(unexpected)}")
    if misshapen:
        problems.append(f"shape mismatch (file vs model) {convert.preview_keys(misshapen, 4)}")
    if problems:
        raise TransegError(f"{source}: weights do not fit the model: " + "; ".join(problems))
    module.load_state_dict(state, strict=True)


# --------------------------------------------------------------------------- transformers format
def _hf_weights_file(directory: Path) -> Path:
    for name in ("model.safetensors", "pytorch_model.bin"):
        if (directory / name).is_file():
            return directory / name
    raise TransegError(f"{directory}: no model.safetensors or pytorch_model.bin in this directory")


def read_weights(path: Path) -> StateDict:
    """The tensors of a weights file (safetensors, or a pickle read safely) or of a transformers
    directory (its ``model.safetensors`` or ``pytorch_model.bin``)."""
    if not path.exists():
        raise TransegError(f"{path}: no such file or directory")
    if path.is_dir():
        path = _hf_weights_file(path)
    return read_safetensors(path)[0] if path.suffix == ".safetensors" else read_torch_file(path)


def read_json(path: Path) -> dict[str, Any]:
    """A JSON file; missing or malformed is a TransegError naming it."""
    if not path.is_file():
        raise TransegError(f"{path}: no such file")
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise TransegError(f"{path}: not valid JSON ({exc})") from None


def _load_hf_dir(directory: Path) -> Segmentor:
    config_path = directory / "config.json"
    config = hf_config_to_model_config(read_json(config_path), source=str(config_path))
    return build_with_state(config, convert.hf_to_transeg(read_weights(directory)), str(directory))


def save_hf_pretrained(model: Segmentor, directory: str | os.PathLike[str]) -> Path:
    """Write a transformers ``SegformerForSemanticSegmentation`` directory (4.x key names)."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    hf_config = model_config_to_hf_config(model.config)
    state = {k: v.detach().contiguous().cpu() for k, v in convert.transeg_to_hf(model.state_dict()).items()}
    write_atomic(directory / "model.safetensors", lambda tmp: save_file(state, tmp, metadata={"format": "pt"}))
    write_atomic(directory / "config.json", lambda tmp: Path(tmp).write_text(json.dumps(hf_config, indent=2)))
    return directory


# --------------------------------------------------------------------------- official SegFormer
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
    name = next(
        (n for n, c in ZOO.items() if c.encoder_config == encoder and c.decoder_config == decoder), "custom"
    )
    return ModelConfig(encoder="mit", encoder_config=encoder, decoder="mlp", decoder_config=decoder,
                       num_classes=state["decoder.classifier.weight"].shape[0], name=name)


def _load_official(path: Path, state: StateDict) -> Segmentor:
    state = convert.official_to_transeg(state)
    return build_with_state(infer_segformer_config(state, str(path)), state, str(path))


# --------------------------------------------------------------------------- entry points
def load_model(path: str | os.PathLike[str]) -> Segmentor:
    """Load a model from any supported file or directory (see the module docstring)."""
    path = Path(path)
    if not path.exists():
        raise TransegError(f"{path}: no such file or directory")
    if path.is_dir():
        config_path = path / "config.json"
        if config_path.is_file() and '"model_type"' in config_path.read_text():
            return _load_hf_dir(path)
        if (path / "model.safetensors").is_file():
            return _load_transeg(path / "model.safetensors")
        raise TransegError(f"{path}: neither a transformers checkpoint directory nor a transeg model directory")
    if path.stat().st_size == 0:
        raise TransegError(f"{path}: the file is empty")
    if path.suffix == ".safetensors":
        return _load_transeg(path)
    obj = torch_load_safely(path)
    if isinstance(obj, dict) and CONFIG_METADATA_KEY in obj:  # a transeg training checkpoint
        config = ModelConfig.from_json(obj[CONFIG_METADATA_KEY], source=str(path))
        return build_with_state(config, state_dict_of(obj, path), str(path))
    state = state_dict_of(obj, path)
    from transeg.weights import segmenter

    if segmenter.is_segmenter_state(state):
        return segmenter.load_segmenter(path, state)
    from transeg.weights import segdeformer

    if segdeformer.is_segdeformer_state(state):  # official SegDeformer (decode_head.class_token/trans)
        converted = segdeformer.official_to_transeg(state)
        return build_with_state(segdeformer.segdeformer_model_config(state, converted, str(path)),
                                 converted, str(path))
    if segmenter.is_vit_backbone(state):
        raise TransegError(f"{path}: a ViT backbone has no decoder; use it as "
                           "create_model(name, num_classes=…, encoder_weights=path)")
    if any(k.endswith("relative_position_bias_table") for k in state):
        raise TransegError(f"{path}: a Swin checkpoint (only its backbone is read); use it as "
                           "create_model(name, num_classes=…, encoder_weights=path)")
    from transeg.weights.resnet import is_resnet_state

    if is_resnet_state(state):
        raise TransegError(f"{path}: a ResNet checkpoint (only its backbone is read); use it as "
                           "create_model(name, num_classes=…, encoder_weights=path)")
    if any(k.startswith(("decode_head.linear_c", "backbone.")) for k in state):
        return _load_official(path, state)
    if any(k.startswith(("segformer.", "decode_head.")) for k in state):
        raise TransegError(f"{path}: transformers weights need their config.json: pass the directory instead")
    if any(k.startswith("patch_embed1.") for k in state):
        raise TransegError(
            f"{path}: an ImageNet MiT backbone has no decoder; use it as "
            "create_model(name, num_classes=…, encoder_weights=path)"
        )
    raise TransegError(f"{path}: unrecognised checkpoint format (first keys: {convert.preview_keys(list(state), 3)})")


def read_encoder_state(path: str | os.PathLike[str]) -> StateDict:
    """Encoder weights (transeg keys without ``encoder.``) from any file that holds a MiT encoder:
    an ImageNet ``mit_b*.pth``, an official/mmseg segmentation checkpoint, a transformers directory
    (segmentation or classification) or a transeg file."""
    path = Path(path)
    if path.is_dir():
        state = read_weights(path)
        if not (path / "config.json").is_file():
            raise TransegError(f"{path}: no config.json in this transformers directory")
        encoder_only = {k: v for k, v in convert.hf5_to_hf4(state).items() if k.startswith(("segformer.", "encoder."))}
        return convert.strip_to_encoder(convert.hf_to_transeg(encoder_only))
    if path.suffix == ".safetensors":
        return convert.strip_to_encoder(read_safetensors(path)[0])
    return convert.strip_to_encoder(convert.official_to_transeg(read_torch_file(path)))


def load_encoder_weights(model: Segmentor, path: str | os.PathLike[str]) -> None:
    """Initialise ``model.encoder`` from a pretrained backbone; every encoder key must match.
    ViT encoders read ViT/DeiT formats (``transeg.weights.segmenter.read_vit_encoder_state``),
    Swin encoders Swin formats (``transeg.weights.swin.read_swin_encoder_state``)."""
    if model.config.encoder == "swin":
        from transeg.weights.swin import read_swin_encoder_state

        state = read_swin_encoder_state(path, model.encoder)
    elif model.config.encoder == "vit":
        from transeg.weights.segmenter import read_vit_encoder_state

        state = read_vit_encoder_state(path, model.encoder)
    elif model.config.encoder == "resnet":  # torchvision, timm, MMSegmentation, transformers
        from transeg.weights.resnet import read_resnet_encoder_state

        state = read_resnet_encoder_state(path, model.encoder)
    else:
        state = read_encoder_state(path)
    load_state_strict(model.encoder, state, str(path))
