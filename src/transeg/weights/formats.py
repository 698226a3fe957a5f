"""How a family declares the weight formats it reads; ``weights.load`` walks these declarations.

A family module (``weights/segformer.py``, ``segmenter.py``, …) exposes one ``FORMATS``:

* ``checkpoints``: whole-model formats recognised from the state dict of a pickled checkpoint, tried
  in order. A format may be recognised only to say how to use it (a bare backbone has no decoder:
  ``backbone_only`` gives the loader that says so).
* ``directories``: whole-model formats that are directories (a transformers checkpoint).
* ``encoders``: for each encoder kind (``ModelConfig.encoder``), the reader of pretrained backbone
  weights for ``create_model(..., encoder_weights=PATH)``.

Adding a format to a family touches that family's module only.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from transeg.errors import TransegError
from transeg.models.encoders.base import Encoder
from transeg.models.segmentor import Segmentor
from transeg.weights.files import StateDict


@dataclass(frozen=True)
class CheckpointFormat:
    """A whole model in a pickled state dict: ``recognise(state)``, then ``load(path, state)``."""

    name: str
    recognise: Callable[[StateDict], bool]
    load: Callable[[Path, StateDict], Segmentor]


@dataclass(frozen=True)
class DirectoryFormat:
    """A whole model in a directory: ``recognise(directory)``, then ``load(directory)``."""

    name: str
    recognise: Callable[[Path], bool]
    load: Callable[[Path], Segmentor]


EncoderReader = Callable[[Path, Encoder], StateDict]  # (file or directory, encoder) -> encoder state dict


@dataclass(frozen=True)
class Formats:
    """What one family reads."""

    checkpoints: tuple[CheckpointFormat, ...] = ()
    directories: tuple[DirectoryFormat, ...] = ()
    encoders: dict[str, EncoderReader] = field(default_factory=dict)


def backbone_only(what: str) -> Callable[[Path, StateDict], Segmentor]:
    """The loader of a backbone checkpoint recognised only to say how it is used."""

    def refuse(path: Path, state: StateDict) -> Segmentor:
        raise TransegError(f"{path}: {what}; use it as create_model(name, num_classes=…, encoder_weights=path)")

    return refuse
