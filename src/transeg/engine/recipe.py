"""Typed, validated training configs: YAML files (optionally extending a ``base``) plus ``--set`` overrides.

A wrong key, type or value is a TransegError naming the file and the dotted key.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, PositiveFloat, PositiveInt, ValidationError, model_validator

from transeg.data.datasets import SegmentationDataset, build_dataset
from transeg.engine.loss_spec import LossTerm
from transeg.errors import TransegError

Pair = tuple[int, int]


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ModelSection(_Section):
    name: str = "segformer-b0"
    num_classes: PositiveInt | None = None  # default: the dataset's class count
    encoder_weights: str | None = None  # pretrained backbone (e.g. mit_b0.pth)
    init: str | None = None  # a whole model to fine-tune from (any format load_model reads)
    image_size: PositiveInt | Pair | None = None  # ViT position-embedding size (Segmenter: the crop)
    drop_path_rate: float | None = Field(None, ge=0, lt=1)  # encoder stochastic depth
    encoder_dropout: float | None = Field(None, ge=0, lt=1)  # ViT dropout (Segmenter Table 2)
    decoder_dropout: float | None = Field(None, ge=0, lt=1)
    decoder_layers: PositiveInt | None = None  # mask transformer blocks (Segmenter: 2; L/16 Cityscapes: 1)


class DataSection(_Section):
    dataset: str
    root: str
    train_split: str = "train"
    val_split: str | None = "val"  # null: no evaluation during training
    options: dict[str, Any] = Field(default_factory=dict)  # extra dataset arguments (folder: classes_yaml)
    crop_size: Pair = (512, 512)
    scale: Pair = (2048, 512)  # base (long, short) scale of the random resize
    ratio_range: tuple[PositiveFloat, PositiveFloat] = (0.5, 2.0)
    cat_max_ratio: float = Field(0.75, gt=0, le=1)
    test_scale: Pair | None = (2048, 512)  # keep-ratio resize at test time; null: none
    size_divisor: PositiveInt | None = None  # test-time H, W rounded up to multiples (official: 32)
    num_workers: int = Field(2, ge=0)
    subset: float | None = Field(None, gt=0, le=1)  # train on this seeded fraction of train_split (Segmenter Table 5)
    subset_seed: int = 0  # which images the fraction keeps
    # classes whose pixels each training crop receives from the previous crop of its batch (data/class_paste.py)
    paste_classes: tuple[str, ...] = ()

    @model_validator(mode="after")
    def _check(self) -> DataSection:
        if min(self.crop_size) < 32:
            raise ValueError(f"crop_size {self.crop_size} is below 32 pixels")
        if self.ratio_range[0] > self.ratio_range[1]:
            raise ValueError(f"ratio_range {self.ratio_range} is not (low, high)")
        return self


class OptimizerSection(_Section):
    type: Literal["adamw", "sgd"] = "adamw"
    lr: PositiveFloat = 6e-5
    weight_decay: float = Field(0.01, ge=0)
    betas: tuple[float, float] = (0.9, 0.999)
    momentum: float = Field(0.9, ge=0, lt=1)
    head_lr_mult: PositiveFloat = 10.0  # decoder lr multiplier (SegFormer: 10; Swin / DeiT UperNet recipes: 1)
    norm_decay_mult: float = Field(0.0, ge=0)  # weight-decay multiplier of LayerNorm parameters
    # which parameters lose their weight decay: "segformer" LayerNorms (x norm_decay_mult); "swin" also
    # the relative-position-bias tables, position embeddings and class token (MMSegmentation's Swin and
    # ViT/DeiT UperNet configs)
    param_groups: Literal["segformer", "swin"] = "segformer"


class ScheduleSection(_Section):
    iterations: PositiveInt = 160_000
    warmup_iters: int = Field(1500, ge=0)
    warmup_ratio: float = Field(1e-6, gt=0, le=1)
    power: PositiveFloat = 1.0
    min_lr: float = Field(0.0, ge=0)


class TrainSection(_Section):
    batch_size: PositiveInt = 16  # global batch, split over the processes
    grad_accum: PositiveInt = 1
    grad_clip: PositiveFloat | None = None
    precision: Literal["fp32", "bf16", "fp16"] = "fp32"  # fp16: autocast with a gradient scaler
    seed: int = 0
    log_interval: PositiveInt = 50
    eval_interval: PositiveInt = 16_000
    checkpoint_interval: PositiveInt = 2_000
    keep_checkpoints: PositiveInt = 3
    max_nonfinite_steps: PositiveInt = 20  # consecutive skipped steps before training stops
    aux_loss_weights: dict[str, float] = Field(default_factory=dict)  # override the model's: aux name -> weight
    # the cross-entropy's divisor: labelled pixels, or all pixels as MMSegmentation (the papers' recipes)
    loss_average: Literal["labelled", "all"] = "labelled"
    time_limit_minutes: PositiveFloat | None = None  # stop (and checkpoint) after this wall time
    on_bad_sample: Literal["error", "skip"] = "error"  # skip: replace unreadable samples, warn once each
    retain_heap: bool = True  # keep freed memory for the next step (glibc, engine/heap.py): faster, larger peak RSS
    # average the weights over the steps (engine/weight_average.py); evaluation and the saved models use the average
    ema_decay: float | None = Field(None, gt=0, lt=1)


class EvalSection(_Section):
    mode: Literal["whole", "slide", "ms-flip"] = "whole"
    crop: Pair | None = None
    stride: Pair | None = None
    scales: tuple[PositiveFloat, ...] = (0.5, 0.75, 1.0, 1.25, 1.5, 1.75)
    flip: bool = True
    batch_size: PositiveInt = 4
    by_object_size: bool = False  # add mIoU on small / medium / large segments (Segmenter Table 4)
    size_thresholds: tuple[PositiveInt, PositiveInt] = (1024, 9216)  # pixel areas: COCO's 32² and 96²
    size_connectivity: Literal[4, 8] = 4  # how ground-truth pixels join into segments

    @model_validator(mode="after")
    def _check(self) -> EvalSection:
        if self.mode == "slide" and (self.crop is None or self.stride is None):
            raise ValueError("mode 'slide' needs crop and stride")
        if self.size_thresholds[0] >= self.size_thresholds[1]:
            raise ValueError(f"size_thresholds {self.size_thresholds} are not (small-medium, medium-large) areas "
                             "in increasing order")
        return self


class TrainConfig(_Section):
    model: ModelSection = Field(default_factory=ModelSection)
    data: DataSection
    optimizer: OptimizerSection = Field(default_factory=OptimizerSection)
    schedule: ScheduleSection = Field(default_factory=ScheduleSection)
    train: TrainSection = Field(default_factory=TrainSection)
    eval: EvalSection = Field(default_factory=EvalSection)
    loss: list[LossTerm] | None = None  # weighted terms (engine/loss_spec.py); none: cross-entropy
    output_dir: str = "runs/experiment"

    @model_validator(mode="after")
    def _check(self) -> TrainConfig:
        if self.train.batch_size % self.train.grad_accum:
            raise ValueError(f"train.batch_size {self.train.batch_size} is not a multiple of "
                             f"train.grad_accum {self.train.grad_accum}")
        if self.schedule.warmup_iters >= self.schedule.iterations:
            raise ValueError("schedule.warmup_iters must be below schedule.iterations")
        return self


def _deep_merge(base: dict[str, Any], update: dict[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(base)
    for key, value in update.items():
        out[key] = _deep_merge(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) \
            else value
    return out


def _read_yaml(path: Path, seen: tuple[Path, ...] = ()) -> dict[str, Any]:
    """A YAML mapping with its ``base`` chain (paths relative to the file) merged underneath."""
    if not path.is_file():
        raise TransegError(f"{path}: no such config file")
    if path.resolve() in seen:
        raise TransegError(f"{path}: config bases form a cycle")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise TransegError(f"{path}:{where} invalid YAML ({getattr(exc, 'problem', exc)})") from None
    except UnicodeDecodeError as exc:
        raise TransegError(f"{path}: not a YAML text file (byte {exc.start} is not UTF-8)") from None
    except OSError as exc:
        raise TransegError(f"{path}: cannot read the config ({exc.strerror})") from None
    if not isinstance(data, dict):
        raise TransegError(f"{path}: a config must be a mapping of sections, not {type(data).__name__}")
    base = data.pop("base", None)
    if base is None:
        return data
    return _deep_merge(_read_yaml(path.parent / base, (*seen, path.resolve())), data)


def apply_overrides(data: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Apply ``section.key=value`` strings (values parsed as YAML) to a config mapping."""
    data = copy.deepcopy(data)
    for item in overrides:
        key, sep, raw = item.partition("=")
        if not sep or not key:
            raise TransegError(f"--set {item!r}: expected key=value, e.g. train.batch_size=8")
        try:
            value = yaml.safe_load(raw)
        except yaml.YAMLError:
            raise TransegError(f"--set {item!r}: the value is not valid YAML") from None
        node = data
        *parents, leaf = key.split(".")
        for part in parents:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise TransegError(f"--set {item!r}: {part} is not a section")
        node[leaf] = value
    return data


def parse_config(data: dict[str, Any], source: str = "config") -> TrainConfig:
    """Validate a mapping; the first problem becomes a one-line TransegError naming the key."""
    try:
        return TrainConfig.model_validate(data)
    except ValidationError as exc:
        error = exc.errors()[0]
        key = ".".join(str(p) for p in error["loc"])
        # a whole section's check names its keys itself: its input (the section) is left out
        shown = error["type"] != "missing" and "input" in error and not isinstance(error["input"], dict)
        got = f" (got {error['input']!r})" if shown else ""
        more = f" [+{exc.error_count() - 1} more]" if exc.error_count() > 1 else ""
        message = "unknown key" if error["type"] == "extra_forbidden" else error["msg"].removeprefix("Value error, ")
        raise TransegError(f"{source}: {key + ': ' if key else ''}{message}{got}{more}") from None


def load_config(path: str | Path, overrides: list[str] | None = None) -> TrainConfig:
    """Read, merge bases, apply overrides and validate a training config file."""
    path = Path(path)
    return parse_config(apply_overrides(_read_yaml(path), overrides or []), str(path))


def build_dataset_from_config(data: DataSection, split: str) -> SegmentationDataset:
    """The ``split`` of the dataset a config's ``data`` section describes (its name, root and options)."""
    return build_dataset(data.dataset, data.root, split, **data.options)
