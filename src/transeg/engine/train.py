"""Iteration-based training: the papers' recipes, checkpoints that resume exactly, DDP under torchrun."""

from __future__ import annotations

import contextlib
import json
import math
import re
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from transeg.data.class_paste import ClassPasteCollate, class_indices
from transeg.data.datasets import SegmentationDataset
from transeg.data.labelled import require_labelled_pixels
from transeg.data.labels import IGNORE_INDEX
from transeg.data.sampling import IterationBatchSampler, TrainStream, collate
from transeg.data.subset import subset
from transeg.data.transforms import train_transforms
from transeg.engine import checkpoint as ckpt
from transeg.engine.cadence import Cadence
from transeg.engine.class_weights import resolve_class_weight
from transeg.engine.distributed import (
    DistInfo,
    all_reduce_mean,
    convert_batchnorm,
    init_distributed,
    warn_if_batchnorm_batch_of_one,
)
from transeg.engine.evaluate import evaluate
from transeg.engine.heap import retained_heap
from transeg.engine.loss_spec import SegLoss, parse_loss_spec
from transeg.engine.optim import build_optimizer, build_scheduler
from transeg.engine.progress import TrainingProgress
from transeg.engine.recipe import ModelSection, TrainConfig, build_dataset_from_config
from transeg.engine.resume import check_same_config, newest_usable_checkpoint, set_aside
from transeg.engine.stopping import Stopping, interrupt_flag
from transeg.engine.train_state import TrainState
from transeg.engine.training_log import TrainingLog
from transeg.engine.training_model import section_num_classes, training_model_config
from transeg.engine.weight_average import WeightAverage
from transeg.errors import TransegError
from transeg.models.factory import build_model
from transeg.models.segmentor import Segmentor
from transeg.weights.keys import load_state_strict
from transeg.weights.load import load_encoder_weights, load_model
from transeg.weights.native import save_model


def train_loader(train_set: SegmentationDataset, cfg: TrainConfig, mean: Any, std: Any, start_iteration: int = 0,
                 info: DistInfo | None = None) -> torch.utils.data.DataLoader:
    """The training batches of ``cfg`` from ``start_iteration`` on: decode, augment and collate (and
    paste ``data.paste_classes``) in ``cfg.data.num_workers`` worker processes, this process's share
    under DDP."""
    data, info = cfg.data, info or DistInfo()
    transform = train_transforms(data.crop_size, data.scale, data.ratio_range, mean, std, data.cat_max_ratio)
    collate_fn = ClassPasteCollate(class_indices(data.paste_classes, train_set.classes, "data.paste_classes")) \
        if data.paste_classes else collate
    sampler = IterationBatchSampler(
        len(train_set), cfg.train.batch_size, cfg.train.seed, start_iteration, cfg.schedule.iterations,
        info.rank, info.world_size, cfg.train.grad_accum,
    )
    return torch.utils.data.DataLoader(
        TrainStream(train_set, transform, cfg.train.seed, cfg.train.on_bad_sample),
        batch_sampler=sampler, collate_fn=collate_fn,
        num_workers=data.num_workers, persistent_workers=False,
        generator=torch.Generator().manual_seed(cfg.train.seed),  # leaves the global RNG alone
    )


def build_training_model(section: ModelSection, dataset: SegmentationDataset) -> Segmentor:
    """The model a config asks for: a zoo variant (optionally with a pretrained encoder, its
    position embeddings resized once to ``section.image_size``) or a checkpoint to fine-tune, with
    the dataset's classes and palette."""
    classes = tuple(dataset.classes)
    if section.init is not None:
        num_classes = section_num_classes(section, classes)
        model = load_model(section.init)
        if model.num_classes != num_classes:
            raise TransegError(f"{section.init}: {model.num_classes} classes, the dataset has {num_classes}")
        return model
    palette = tuple(tuple(int(c) for c in rgb) for rgb in dataset.palette)
    model = build_model(training_model_config(section, classes, palette))
    if section.encoder_weights is not None:
        load_encoder_weights(model, section.encoder_weights)
    return model


AUTOCAST_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}  # train.precision -> autocast dtype


def training_autocast(device_type: str, precision: str) -> torch.autocast:
    """Autocast for a ``train.precision``: off for fp32, else to its dtype in ``AUTOCAST_DTYPES``."""
    return torch.autocast(device_type, AUTOCAST_DTYPES.get(precision, torch.bfloat16), enabled=precision != "fp32")


class _TrainForward(nn.Module):
    """Routes ``forward`` to ``forward_train`` so that DDP sees the training pass."""

    def __init__(self, model: Segmentor) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor, labels: torch.Tensor):
        return self.model.forward_train(x, labels)


@dataclass
class TrainResult:
    iteration: int
    output_dir: Path
    best_miou: float | None
    last_metrics: dict[str, Any] | None
    stopped_early: str | None = None


def build_training_loss(cfg: TrainConfig, train_set: SegmentationDataset, info: DistInfo | None = None,
                        write: bool = True) -> SegLoss:
    """The recipe's loss: its terms, averaging and auxiliary weights, with ``class_weight: auto``
    counted over ``train_set`` (cached in the run folder when ``write``)."""
    terms = parse_loss_spec(cfg.loss)
    return SegLoss(terms, cfg.train.loss_average, info, cfg.train.aux_loss_weights,
                   resolve_class_weight(terms, train_set, Path(cfg.output_dir), write))


class Trainer:
    """Runs one training config: build, optionally resume, loop, evaluate, checkpoint."""

    def __init__(self, cfg: TrainConfig, info: DistInfo | None = None, model: Segmentor | None = None) -> None:
        """``model`` replaces the one ``cfg.model`` describes (anything with ``encoder``/``decoder``
        children, ``forward``, ``forward_train(x, labels)``, ``config``, ``num_classes`` and
        ``min_input_size``)."""
        self.cfg = cfg
        self.info = info or init_distributed()
        self.out_dir = Path(cfg.output_dir)
        self.ckpt_dir = self.out_dir / "checkpoints"
        data = cfg.data
        self.train_set = build_dataset_from_config(data, data.train_split)
        if data.subset is not None:
            self.train_set = subset(self.train_set, data.subset, data.subset_seed)
        class_indices(data.paste_classes, self.train_set.classes, "data.paste_classes")  # names checked now
        self.val_set: SegmentationDataset | None = (
            build_dataset_from_config(data, data.val_split) if data.val_split else None
        )
        torch.manual_seed(cfg.train.seed + self.info.rank)
        model = model if model is not None else build_training_model(cfg.model, self.train_set)
        self.model = model.to(self.info.device)
        convert_batchnorm(self.model, self.info)
        self.optimizer = build_optimizer(self.model, cfg.optimizer)
        self.scheduler = build_scheduler(self.optimizer, cfg.schedule)
        # fp16: loss scaling against gradient underflow; disabled, its calls pass through
        self.scaler = torch.amp.GradScaler(self.info.device.type, enabled=cfg.train.precision == "fp16")
        self.loss_fn = build_training_loss(cfg, self.train_set, self.info, write=self.info.is_main)
        self.loss_fn.check_classes(self.model.num_classes)
        self.average = WeightAverage(self.model, cfg.train.ema_decay) if cfg.train.ema_decay is not None else None
        self.iteration = 0
        self.best_miou: float | None = None
        self.nonfinite_in_row = 0
        self.nonfinite_total = 0
        self.labels_seen = False  # whether a batch with a labelled pixel has come

    # ------------------------------------------------------------------ state
    def snapshot(self) -> TrainState:
        """The run as it stands."""
        return TrainState(
            model=self.model.state_dict(),
            model_config=self.model.config.to_json(),
            optimizer=self.optimizer.state_dict(),
            scheduler=self.scheduler.state_dict(),
            torch_rng=torch.get_rng_state(),
            iteration=self.iteration,
            best_miou=self.best_miou,
            nonfinite_in_row=self.nonfinite_in_row,
            nonfinite_total=self.nonfinite_total,
            train_config=self.cfg.model_dump(mode="json"),
            grad_scaler=self.scaler.state_dict() if self.scaler.is_enabled() else None,
            weight_average=self.average.state_dict() if self.average is not None else None,
        )

    def restore(self, state: TrainState, source: str = "checkpoint") -> None:
        """Continue from ``state``; its configs describe the run it came from and are not applied.
        Weights or an optimizer state that do not fit are a TransegError naming ``source``."""
        load_state_strict(self.model, state.model, source)
        try:
            self.optimizer.load_state_dict(state.optimizer)
        except (ValueError, KeyError) as exc:
            raise TransegError(f"{source}: the optimizer state does not fit this run's optimizer ({exc})") from None
        self.scheduler.load_state_dict(state.scheduler)
        torch.set_rng_state(state.torch_rng)
        self.iteration = state.iteration
        self.best_miou = state.best_miou
        self.nonfinite_in_row = state.nonfinite_in_row
        self.nonfinite_total = state.nonfinite_total
        if self.scaler.is_enabled() and state.grad_scaler:
            self.scaler.load_state_dict(state.grad_scaler)
        if self.average is not None:
            self.average = self._restored_average(self.average.decay, state, source)

    def _restored_average(self, decay: float, state: TrainState, source: str) -> WeightAverage:
        """The weight average ``state`` holds; from the restored weights when its run kept none."""
        average = WeightAverage(self.model, decay)
        if state.weight_average is not None:
            try:
                average.load_state_dict(state.weight_average)
            except (RuntimeError, KeyError) as exc:
                raise TransegError(f"{source}: the weight average does not fit this model ({exc})") from None
        return average

    @property
    def result_model(self) -> Segmentor:
        """The model the run evaluates and saves: the weight average with ``train.ema_decay``, else the
        trained model."""
        return self.average.model if self.average is not None else self.model

    def state(self) -> dict[str, Any]:
        """The checkpoint dict of the run as it stands."""
        return self.snapshot().to_checkpoint()

    def resume(self, resume_anyway: bool = False) -> bool:
        """Load the newest usable checkpoint of the output directory; False when there is none.

        Newer checkpoints that do not read are passed over with one warning and renamed
        ``NAME.unusable`` (so that deleting old checkpoints never keeps them over good ones); none
        usable is a TransegError naming them. A checkpoint made under another training config is refused,
        naming the differing keys, unless ``resume_anyway``.
        """
        if self.info.is_main:
            ckpt.remove_partial_writes(self.ckpt_dir)
        found = newest_usable_checkpoint(self.ckpt_dir)
        if found is None:
            return False
        if found.passed_over and self.info.is_main:
            aside = ", ".join(set_aside(path).name for path in found.unusable)
            warnings.warn(f"resuming from {found.path}; unusable newer checkpoint(s) passed over and renamed "
                          f"{aside}: " + " | ".join(found.passed_over), stacklevel=2)
        if not resume_anyway:
            check_same_config(found.state, self.cfg.model_dump(mode="json"), found.path)
        self.restore(found.state, str(found.path))
        return True

    def save(self) -> Path | None:
        path = None
        if self.info.is_main:
            path = ckpt.save_checkpoint(self.state(), self.ckpt_dir, self.iteration, self.cfg.train.keep_checkpoints)
        self._barrier()
        return path

    def _barrier(self) -> None:
        if self.info.distributed:
            torch.distributed.barrier()

    # ------------------------------------------------------------------ loop
    def _loader(self) -> torch.utils.data.DataLoader:
        return train_loader(self.train_set, self.cfg, self.model.config.mean, self.model.config.std,
                            self.iteration, self.info)

    def _step(self, network: nn.Module, batches) -> tuple[torch.Tensor, dict[str, torch.Tensor], bool]:
        """One optimizer step over ``grad_accum`` micro-batches; returns loss, parts, and whether the step
        was sound: applied, or (fp16) skipped by the gradient scaler after an overflow of the scaled
        gradients with a finite loss, which lowers the scale and is not a bad step."""
        cfg = self.cfg.train
        self.optimizer.zero_grad(set_to_none=True)
        total, parts_sum = torch.zeros((), device=self.info.device), {}
        for m in range(cfg.grad_accum):
            batch = next(batches)
            image = batch["image"].to(self.info.device, non_blocking=True)
            label = batch["label"].to(self.info.device, non_blocking=True)
            self._check_labelled(label)
            last = m == cfg.grad_accum - 1
            sync = network.no_sync() if isinstance(network, DistributedDataParallel) and not last \
                else contextlib.nullcontext()
            with sync, training_autocast(self.info.device.type, cfg.precision):
                out = network(image, label)
            loss, parts = self.loss_fn.with_parts(out, label)  # global-batch average under DDP
            with sync:
                self.scaler.scale(loss / cfg.grad_accum).backward()
            total += loss.detach() / cfg.grad_accum
            for k, v in parts.items():
                parts_sum[k] = parts_sum.get(k, 0) + v / cfg.grad_accum
        params = [p for p in self.model.parameters() if p.grad is not None]
        max_norm = cfg.grad_clip if cfg.grad_clip is not None else math.inf
        self.scaler.unscale_(self.optimizer)
        grad_norm = torch.nn.utils.clip_grad_norm_(params, max_norm)
        loss_finite = bool(torch.isfinite(all_reduce_mean(total, self.info)))
        if self.scaler.is_enabled():
            if loss_finite:
                self.scaler.step(self.optimizer)  # skipped when the unscaled gradients are not finite
            self.scaler.update()
            finite = loss_finite
        else:
            finite = bool(torch.isfinite(grad_norm)) and loss_finite
            if finite:
                self.optimizer.step()
        if finite and self.average is not None:
            self.average.update(self.model)
        with warnings.catch_warnings():  # a skipped step still advances the schedule, on purpose
            warnings.filterwarnings("ignore", re.escape("Detected call of `lr_scheduler.step()`"), UserWarning)
            self.scheduler.step()
        return all_reduce_mean(total, self.info), parts_sum, finite

    def fit(self, show_progress: bool = True) -> TrainResult:
        """Train from the current iteration to the end of the schedule or the time limit, then save
        the checkpoint and ``model.safetensors``. Ctrl-C saves a checkpoint and raises a TransegError.
        Freed memory stays in the heap for the next step unless ``train.retain_heap`` is false."""
        self._check_batch_split()
        self._write_run_config()
        log = TrainingLog(self.out_dir, self.info.is_main)
        network = self._training_network()
        batches = iter(self._loader())
        cadence = Cadence.of(self.cfg, has_validation=self.val_set is not None)
        last_metrics, stopped = None, None
        with TrainingProgress(log, self.cfg.train.batch_size, self.cfg.schedule.iterations, self.iteration,
                              self._lr(), show_progress and self.info.is_main) as progress, \
                interrupt_flag() as interrupted, retained_heap(self.cfg.train.retain_heap):
            stopping = Stopping(self.cfg.schedule.iterations, self.cfg.train.time_limit_minutes, interrupted)
            try:
                while stopping.budget_left(self.iteration):
                    stopping.raise_if_interrupted()
                    loss, parts, applied = self._step(network, batches)
                    self.iteration += 1
                    self._count_nonfinite(applied, loss)
                    progress.step(self.iteration, loss, parts, self._lr(), self.nonfinite_total,
                                  record=cadence.logs_at(self.iteration))
                    if cadence.evaluates_at(self.iteration):
                        last_metrics = self._evaluate(log)
                    if cadence.checkpoints_at(self.iteration):
                        self.save()
                    if (stopped := stopping.time_limit_reached()) is not None:
                        break
            except KeyboardInterrupt:
                path = self.save()
                raise TransegError(f"interrupted at iteration {self.iteration}; checkpoint {path}; "
                                   "continue with --resume") from None
        self.save()
        if self.info.is_main:
            save_model(self.result_model, self.out_dir / "model.safetensors")
        return TrainResult(self.iteration, self.out_dir, self.best_miou, last_metrics, stopped)

    def _check_batch_split(self) -> None:
        """The global batch must split evenly over processes and accumulation steps."""
        train, world_size = self.cfg.train, self.info.world_size
        if train.batch_size % (world_size * train.grad_accum):
            raise TransegError(f"train.batch_size {train.batch_size} does not split over "
                               f"{world_size} processes x {train.grad_accum} accumulation steps")
        warn_if_batchnorm_batch_of_one(self.model, train.batch_size // (world_size * train.grad_accum))

    def _write_run_config(self) -> None:
        self.out_dir.mkdir(parents=True, exist_ok=True)
        if self.info.is_main:
            (self.out_dir / "config.json").write_text(json.dumps(self.cfg.model_dump(mode="json"), indent=2))

    def _training_network(self) -> nn.Module:
        """The model in training mode, called through ``forward_train`` (under DDP when distributed)."""
        self.model.train()
        network: nn.Module = _TrainForward(self.model)
        if self.info.distributed:
            network = DistributedDataParallel(network, device_ids=None if self.info.device.type == "cpu"
                                              else [self.info.device])
        return network

    def _check_labelled(self, label: torch.Tensor) -> None:
        """Until a batch has a labelled pixel, an all-ignored (B, H, W) batch makes the training set
        prove that it labels something (``require_labelled_pixels``): a run on nothing stops."""
        if not self.labels_seen:
            if not bool((label != IGNORE_INDEX).any()):
                require_labelled_pixels(self.train_set, self.cfg.train.on_bad_sample)
            self.labels_seen = True

    def _lr(self) -> float:
        return self.optimizer.param_groups[0]["lr"]

    def _count_nonfinite(self, applied: bool, loss: torch.Tensor) -> None:
        if applied:
            self.nonfinite_in_row = 0
            return
        self.nonfinite_in_row += 1
        self.nonfinite_total += 1
        if self.nonfinite_in_row >= self.cfg.train.max_nonfinite_steps:
            raise TransegError(
                f"{self.nonfinite_in_row} steps in a row had a non-finite loss or gradient (last loss {float(loss)}) "
                f"up to iteration {self.iteration}; lower optimizer.lr, set train.grad_clip or use fp32"
            )

    def _evaluate(self, log: TrainingLog) -> dict[str, Any]:
        data = self.cfg.data
        metrics, _ = evaluate(self.result_model, self.val_set, self.cfg.eval, data.test_scale, data.size_divisor,
                              self.info, show_progress=False, on_bad_sample=self.cfg.train.on_bad_sample)
        self.model.train()
        summary = {"iter": self.iteration, "mIoU": metrics.mIoU, "aAcc": metrics.aAcc, "mAcc": metrics.mAcc}
        log.write(summary)
        if self.best_miou is None or metrics.mIoU > self.best_miou:
            self.best_miou = metrics.mIoU
            if self.info.is_main:
                save_model(self.result_model, self.out_dir / "best.safetensors")
        return metrics.to_dict()


def train(cfg: TrainConfig, resume: bool = False, show_progress: bool = True,
          resume_anyway: bool = False) -> TrainResult:
    """Train (or, with ``resume``, continue) the run described by ``cfg``; ``resume_anyway``
    continues a run whose checkpoint was made under another config (see ``Trainer.resume``)."""
    trainer = Trainer(cfg)
    if resume and not trainer.resume(resume_anyway) and trainer.info.is_main:
        print(f"no checkpoint in {trainer.ckpt_dir}; starting from iteration 0")
    return trainer.fit(show_progress)
