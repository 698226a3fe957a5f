"""SegDeformerConfig: the settings of both SegDeformer heads (the paper's and the released one)."""

from __future__ import annotations

from dataclasses import dataclass

from transeg.errors import TransegError

MODES = ("paper", "released")
TOKEN_UPDATES = ("learnable", "momentum")
FUSIONS = ("mlp", "uper")


@dataclass(frozen=True)
class SegDeformerConfig:
    """A SegDeformer head. ``channels`` is C; ``aux_weight`` is alpha of Eq. 9, the weight of L_attn
    (the ``"attn"`` aux loss) and of nothing else. The fields after ``aux_weight`` are the paper-mode
    switches (defaults: the paper's final model) and must keep their defaults in ``"released"`` mode:

    * ``internal``, ``external``: M_inter, M_exter on/off (Table 6);
    * ``attn_loss`` (L_attn), ``y_exter`` (the second external attention), ``decoupled`` (info/class
      token halves), ``token_update`` "learnable" | "momentum" (Table 5). Momentum tokens are MCIBI's
      memory: ``token_momentum`` is its base momentum, the weight of the batch's class centre at
      iteration 0, decaying as ``(1 - t / token_momentum_iters) ** token_momentum_power``;
    * ``internal_heads``, ``internal_depth``, ``mlp_after_internal`` (Table 4);
    * ``efficient_ratio`` R (None: full attention), ``fusion`` "mlp" | "uper" (Sec. 3.4, Table 7);
    * ``fuse_layers``: 1x1 conv + BN + ReLU layers of the MLP fusion (SegFormer: 1). Table 8's
      "(depth, width)" base decoders have depth 1 + ``fuse_layers`` (the stage projections, then these);
    * ``uper_aux_channels`` > 0 adds, with ``fusion="uper"``, MMSegmentation's auxiliary FCN head (on
      encoder feature 2, aux name ``"aux"``, weight ``uper_aux_weight``: 0.4 in the UperNet (†) recipes).
    """

    mode: str = "paper"
    channels: int = 256
    dropout: float = 0.1
    aux_weight: float = 0.4
    internal: bool = True
    external: bool = True
    attn_loss: bool = True
    decoupled: bool = True
    y_exter: bool = True
    token_update: str = "learnable"
    token_momentum: float = 0.9
    token_momentum_iters: int = 160_000
    token_momentum_power: float = 0.9
    internal_heads: int = 1
    internal_depth: int = 1
    mlp_after_internal: bool = False
    efficient_ratio: int | None = None
    fusion: str = "mlp"
    fuse_layers: int = 1
    uper_aux_channels: int = 0
    uper_aux_weight: float = 0.4

    def __post_init__(self) -> None:
        def fail(message: str) -> None:
            raise TransegError(f"SegDeformerConfig: {message}")

        if self.mode not in MODES:
            fail(f"mode {self.mode!r} is not one of {MODES}")
        if self.token_update not in TOKEN_UPDATES:
            fail(f"token_update {self.token_update!r} is not one of {TOKEN_UPDATES}")
        if self.fusion not in FUSIONS:
            fail(f"fusion {self.fusion!r} is not one of {FUSIONS}")
        if self.channels < 1 or self.internal_heads < 1 or self.internal_depth < 1:
            fail("channels, internal_heads and internal_depth must be positive")
        if self.channels % self.internal_heads:
            fail(f"channels {self.channels} is not divisible by internal_heads {self.internal_heads}")
        if self.efficient_ratio is not None and self.efficient_ratio < 1:
            fail(f"efficient_ratio {self.efficient_ratio} must be a positive integer or null")
        if not 0.0 <= self.token_momentum <= 1.0:
            fail(f"token_momentum {self.token_momentum} must lie in [0, 1]")
        if self.token_momentum_iters < 1 or self.token_momentum_power < 0:
            fail(f"token_momentum_iters {self.token_momentum_iters} must be positive and token_momentum_power "
                 f"{self.token_momentum_power} non-negative")
        if self.fuse_layers < 1 or (self.fuse_layers > 1 and self.fusion != "mlp"):
            fail(f"fuse_layers {self.fuse_layers} must be positive, and above 1 only with fusion 'mlp'")
        if self.uper_aux_channels and self.fusion != "uper":
            fail("uper_aux_channels needs fusion 'uper'")
        if self.mode == "released":
            changed = [f for f in _PAPER_SWITCHES if getattr(self, f) != getattr(_PAPER_DEFAULTS, f)]
            if changed:
                fail(f"{changed} are paper-mode switches; the released head has none of them")

    @property
    def has_attn_loss(self) -> bool:
        """Whether ``forward_train`` returns the ``"attn"`` aux logits (no external module, no map)."""
        return self.mode == "released" or (self.external and self.attn_loss)


_PAPER_SWITCHES = ("internal", "external", "attn_loss", "decoupled", "y_exter", "token_update",
                   "token_momentum", "token_momentum_iters", "token_momentum_power", "internal_heads",
                   "internal_depth", "mlp_after_internal", "efficient_ratio", "fusion", "fuse_layers",
                   "uper_aux_channels", "uper_aux_weight")
_PAPER_DEFAULTS = SegDeformerConfig()
