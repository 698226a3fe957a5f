"""transeg's own formats: a ``.safetensors`` file carrying its model config in the metadata (or a
``.json`` beside it), a directory holding ``model.safetensors``, and training checkpoints
(``iter_*.pt``, the model config inside)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from safetensors.torch import save_file

from transeg.errors import TransegError
from transeg.models.factory import model_config_from_json
from transeg.models.segmentor import Segmentor
from transeg.weights.files import read_safetensors, state_dict_of, write_atomic
from transeg.weights.formats import DirectoryFormat, Formats
from transeg.weights.keys import build_with_state

CONFIG_METADATA_KEY = "transeg_config"


def save_model(model: Segmentor, path: str | os.PathLike[str]) -> Path:
    """Write ``model`` as one safetensors file carrying its config in the metadata."""
    path = Path(path)
    if path.suffix != ".safetensors":
        path = path / "model.safetensors" if path.is_dir() or not path.suffix else path.with_suffix(".safetensors")
    tensors = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    metadata = {CONFIG_METADATA_KEY: model.config.to_json(), "format": "pt"}
    write_atomic(path, lambda tmp: save_file(tensors, tmp, metadata=metadata))
    return path


def load_safetensors(path: Path) -> Segmentor:
    """A transeg ``.safetensors`` model file."""
    state, metadata = read_safetensors(path)
    if CONFIG_METADATA_KEY in metadata:
        config = model_config_from_json(metadata[CONFIG_METADATA_KEY], source=str(path))
    elif path.with_suffix(".json").is_file():
        json_path = path.with_suffix(".json")
        config = model_config_from_json(json_path.read_text(), source=str(json_path))
    else:
        raise TransegError(f"{path}: no transeg model config in its metadata nor in {path.with_suffix('.json')}")
    return build_with_state(config, state, str(path))


def is_training_checkpoint(obj: Any) -> bool:
    """A transeg training checkpoint: a dict holding the model config beside the state."""
    return isinstance(obj, dict) and CONFIG_METADATA_KEY in obj


def load_training_checkpoint(path: Path, obj: dict[str, Any]) -> Segmentor:
    """The model of a loaded training checkpoint (``is_training_checkpoint``)."""
    config = model_config_from_json(obj[CONFIG_METADATA_KEY], source=str(path))
    return build_with_state(config, state_dict_of(obj, path), str(path))


FORMATS = Formats(directories=(
    DirectoryFormat("transeg model directory", lambda d: (d / "model.safetensors").is_file(),
                    lambda d: load_safetensors(d / "model.safetensors")),
))
