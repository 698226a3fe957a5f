"""The ``loss:`` list of a training config and :func:`build_loss`, the callable the trainer uses.

Each term has a ``type`` and a ``weight``; the loss is ``Σ weight · term`` on the main logits plus,
for each auxiliary output of the decoder, its aux weight times the same sum on the aux logits. No
``loss:`` list is today's plain cross-entropy. ``class_weight: auto`` is resolved by the caller from the
training split's class frequencies (:mod:`transeg.data.class_weights`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Annotated, Any, Literal

import torch
from pydantic import BaseModel, ConfigDict, Field, NonNegativeInt, PositiveInt, TypeAdapter, ValidationError

from transeg.engine.distributed import DistInfo
from transeg.engine.loss_terms import cross_entropy, focal, ohem_cross_entropy
from transeg.engine.losses import LossAverage, global_loss_divisor
from transeg.engine.region_losses import dice, lovasz_softmax
from transeg.errors import TransegError
from transeg.models.outputs import SegOutput


class _Term(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    weight: float = Field(1.0, ge=0)


class CrossEntropyTerm(_Term):
    type: Literal["cross_entropy"]
    class_weight: tuple[float, ...] | Literal["auto"] | None = None  # (K,) per class, or from frequencies


class FocalTerm(_Term):
    type: Literal["focal"]
    gamma: float = Field(2.0, ge=0)
    alpha: float | None = Field(None, ge=0, le=1)  # one-class models: the foreground weight


class DiceTerm(_Term):
    type: Literal["dice"]
    smooth: float = Field(1.0, ge=0)
    points: PositiveInt | None = None  # labelled pixels drawn per image (none: every one)


class LovaszTerm(_Term):
    type: Literal["lovasz"]
    points: PositiveInt | None = None  # labelled pixels drawn per image (none: every one)


class OhemTerm(_Term):
    type: Literal["ohem_cross_entropy"]
    thresh: float | None = Field(0.7, gt=0, le=1)  # keep pixels whose true-class probability is below this
    # (none: keep the min_kept per image of largest loss)
    min_kept: NonNegativeInt = 100_000  # ... but at least this many per image


LossTerm = Annotated[CrossEntropyTerm | FocalTerm | DiceTerm | LovaszTerm | OhemTerm, Field(discriminator="type")]
LossSpec = list[LossTerm]


def uses_auto_class_weight(spec: Sequence[LossTerm] | None) -> bool:
    return any(isinstance(t, CrossEntropyTerm) and t.class_weight == "auto" for t in spec or ())


class SegLoss:
    """``(model output, labels) -> scalar loss``: the weighted terms on the main logits and each aux
    output. ``average`` and ``info`` give the per-pixel terms their global-batch divisor."""

    def __init__(self, terms: Sequence[LossTerm], average: LossAverage = "labelled", info: DistInfo | None = None,
                 aux_weights: dict[str, float] | None = None, class_weight: Sequence[float] | None = None) -> None:
        self.terms = list(terms)
        self.average = average
        self.info = info or DistInfo()
        self.aux_weights = aux_weights or {}
        # (K,) weights standing in for class_weight: auto
        self.class_weight = None if class_weight is None else torch.tensor(list(class_weight), dtype=torch.float32)

    def check_classes(self, num_classes: int, source: str = "loss") -> None:
        """Refuse, before any step, terms that cannot apply to a ``num_classes``-channel model: a
        ``class_weight`` list of another length, focal's ``alpha`` with several classes, a softmax-only
        term on one channel."""
        for i, term in enumerate(self.terms):
            if isinstance(term, CrossEntropyTerm) and isinstance(term.class_weight, tuple) \
                    and len(term.class_weight) != num_classes:
                raise TransegError(f"{source}.{i}.class_weight: {len(term.class_weight)} values for a "
                                   f"{num_classes}-class model")
            if isinstance(term, FocalTerm) and term.alpha is not None and num_classes > 1:
                raise TransegError(f"{source}.{i}.alpha: weighs the foreground of one-class (sigmoid) models; "
                                   f"this model has {num_classes} classes")
            if isinstance(term, (LovaszTerm, OhemTerm)) and num_classes < 2:
                raise TransegError(f"{source}.{i}: {term.type} needs a softmax model of 2 or more classes")

    def __call__(self, out: SegOutput | torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return self.with_parts(out, labels)[0]

    def with_parts(self, out: SegOutput | torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, dict]:
        """The loss and its detached parts for the log (``loss_seg``, ``loss_<aux name>``)."""
        out = out if isinstance(out, SegOutput) else SegOutput(out)
        divisor = global_loss_divisor(labels, self.average, self.info)
        loss = self._terms(out.logits, labels, divisor)
        parts = {"loss_seg": loss.detach()}
        for name, aux_logits in out.aux.items():
            aux = self._terms(aux_logits, labels, divisor)
            parts[f"loss_{name}"] = aux.detach()
            loss = loss + self.aux_weights.get(name, out.aux_weights.get(name, 0.0)) * aux
        return loss, parts

    def _terms(self, logits: torch.Tensor, labels: torch.Tensor, divisor: torch.Tensor) -> torch.Tensor:
        total = logits.new_zeros((), dtype=torch.float32)
        for term in self.terms:
            total = total + term.weight * self._term(term, logits, labels, divisor)
        return total

    def _term(self, term: LossTerm, logits: torch.Tensor, labels: torch.Tensor, divisor: torch.Tensor) -> torch.Tensor:
        info = self.info
        if isinstance(term, CrossEntropyTerm):
            return cross_entropy(logits, labels, divisor, self._weights(term, logits.shape[1]))
        if isinstance(term, FocalTerm):
            return focal(logits, labels, divisor, term.gamma, term.alpha)
        if isinstance(term, DiceTerm):
            return dice(logits, labels, term.smooth, info, term.points)
        if isinstance(term, LovaszTerm):
            return lovasz_softmax(logits, labels, info, term.points)
        return ohem_cross_entropy(logits, labels, divisor, term.thresh, term.min_kept, info)

    def _weights(self, term: CrossEntropyTerm, num_classes: int) -> torch.Tensor | None:
        if term.class_weight is None:
            return None
        if term.class_weight == "auto":
            if self.class_weight is None:
                raise TransegError("loss cross_entropy: class_weight auto needs the training split's class "
                                   "frequencies (build_loss(..., class_weight=...))")
            weights = self.class_weight
        else:
            weights = torch.tensor(term.class_weight, dtype=torch.float32)
        if weights.numel() != num_classes:
            raise TransegError(f"loss cross_entropy: class_weight has {weights.numel()} values for a "
                               f"{num_classes}-class model")
        return weights


def parse_loss_spec(spec: Sequence[Any] | None, source: str = "loss") -> LossSpec:
    """A list of term mappings (or terms) -> validated terms; None or [] -> plain cross-entropy. A bad
    term is a TransegError naming ``source``, its index and key."""
    if not spec:
        return [CrossEntropyTerm(type="cross_entropy")]
    try:
        return TypeAdapter(LossSpec).validate_python(list(spec))
    except ValidationError as exc:
        error = exc.errors()[0]
        key = ".".join(str(p) for p in error["loc"])
        raise TransegError(f"{source}.{key}: {error['msg']}") from None


def build_loss(spec: Sequence[Any] | None = None, *, average: LossAverage = "labelled",
               info: DistInfo | None = None, aux_weights: dict[str, float] | None = None,
               class_weight: Sequence[float] | None = None) -> Callable[[SegOutput | torch.Tensor, torch.Tensor],
                                                                         torch.Tensor]:
    """The training loss a ``loss:`` list describes, e.g. ``[{"type": "cross_entropy", "weight": 1},
    {"type": "dice", "weight": 0.5}]``: a :class:`SegLoss` mapping a model output (a :class:`SegOutput`
    or (B, K, h, w) logits) and (B, H, W) int64 labels (255 = ignore) to a scalar. ``class_weight``
    fills in ``class_weight: auto``."""
    return SegLoss(parse_loss_spec(spec), average, info, aux_weights, class_weight)
