"""State-dict keys: renaming by rules, previews for messages, and strict loading that names what differs."""

from __future__ import annotations

import re

import torch

from transeg.errors import TransegError
from transeg.models.config import ModelConfig
from transeg.models.factory import build_model
from transeg.models.segmentor import Segmentor
from transeg.weights.files import StateDict

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


def strip_to_encoder(state: StateDict) -> StateDict:
    """Keep the ``encoder.`` entries of a transeg state dict, without the prefix."""
    return {k.removeprefix("encoder."): v for k, v in state.items() if k.startswith("encoder.")}


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
        problems.append(f"missing {preview_keys(missing)}")
    if unexpected:
        problems.append(f"unexpected {preview_keys(unexpected)}")
    if misshapen:
        problems.append(f"shape mismatch (file vs model) {preview_keys(misshapen, 4)}")
    if problems:
        raise TransegError(f"{source}: weights do not fit the model: " + "; ".join(problems))
    module.load_state_dict(state, strict=True)
