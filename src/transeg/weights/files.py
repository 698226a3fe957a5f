"""Reading and writing weight files safely: a leaf that knows no model.

Foreign pickles are opened with ``torch.load(weights_only=True)``: no code in them runs. Writes are
atomic (a temporary file, fsynced, then renamed), so a crash never leaves half a file.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, safe_open

from transeg.errors import TransegError

StateDict = dict[str, torch.Tensor]


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


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def write_atomic(path: Path, write: Any) -> None:
    """Call ``write(tmp_path)`` then fsync and rename over ``path``, so a crash never leaves half a file.

    The temporary file, ``.<name>.<random><suffix>`` beside ``path``, keeps the suffix (writers that
    choose the format by it see the right one); the final file has the mode of any new file,
    0666 less the umask.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=path.suffix, dir=path.parent)
    os.close(fd)
    try:
        os.chmod(tmp, 0o666 & ~_umask())
        write(tmp)
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def hf_weights_file(directory: Path) -> Path:
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
        path = hf_weights_file(path)
    return read_safetensors(path)[0] if path.suffix == ".safetensors" else read_torch_file(path)


def read_json(path: Path) -> dict[str, Any]:
    """A JSON file; missing or malformed is a TransegError naming it."""
    if not path.is_file():
        raise TransegError(f"{path}: no such file")
    try:
        return json.loads(path.read_bytes())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise TransegError(f"{path}: not valid JSON ({exc})") from None
