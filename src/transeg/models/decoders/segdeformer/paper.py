"""SegDeformer (Shi et al., ECCV 2022): a transformer decoder with internal and external context mining.

Two modes, chosen by ``SegDeformerConfig.mode``:

* ``"paper"`` (this module): Eqs. 1-10 of the paper, with switches for its ablations (Tables 4-7).
* ``"released"`` (``released.py``): the authors' released ``SegDeformerHead3``, the head
  that produced the published numbers; it differs from the paper (see that module).

Paper mode, step by step (C = ``channels``, N = H_1 W_1 pixels at the finest feature map):

1. Fusion (Eq. 1): SegFormer's All-MLP fusion up to and including the fuse conv + BN + ReLU
   (``MLPDecoder.fused_features``; its dropout and classifier are this decoder's), then
   ``fuse_layers - 1`` more 1x1 conv + BN + ReLU (``fuse_extra``, Table 8's deeper base decoders),
   or UperNet (``fusion="uper"``, ``UperNetFusion``). Flattened to X_inter (B, N, C).
2. Internal context (Eq. 5): Y_inter = SoftMax(Q K^T / sqrt(C)) V, with Q, K, V = Linear(C, C)
   (with bias) of X_inter. The paper names only Q, K and V, so there is no output projection.
   ``internal_heads``/``internal_depth`` (Table 4) split C over heads / stack layers, each layer
   adding its output to a residual stream whose total update is Y_inter; ``mlp_after_internal``
   (Table 4, last row) adds ``Z + FFN(LN(Z))`` after each attention output Z (FFN: Linear(C, 4C),
   GELU, Linear(4C, C)); the paper does not spell this out, so this is our choice.
3. External context (Eqs. 6-7, 10): N_cls learnable tokens X_exter. Decoupled (Eq. 10), each token
   is 2C wide, [x_info, x_class]: K_mid = Linear(x_class), V_mid = Linear(x_info); not decoupled,
   each is C wide and both K_mid and V_mid project it. Q_mid = Linear(X_inter).
   Attn_mid = Q_mid K_mid^T / sqrt(C) (B, N, N_cls); X_mid = SoftMax(Attn_mid) V_mid.
   Then Y_exter = SoftMax(Q_ext K_ext^T / sqrt(C)) V_ext with Q_ext = Linear(X_inter),
   K_ext, V_ext = Linear(X_mid): an N x N attention. ``y_exter=False`` (Table 5) uses X_mid as Y_exter.
4. F_aug = X_inter + Y_inter + Y_exter (Eq. 3), reshaped; Dropout2d; 1x1 classifier (Eq. 4).
5. L_attn (Eq. 8): Attn_mid, reshaped to (B, N_cls, H_1, W_1) and not softmaxed, is returned by
   ``forward_train`` as the auxiliary logits ``"attn"`` with weight ``aux_weight`` (alpha = 0.4, Eq. 9);
   the trainer upsamples it to the label size and applies cross-entropy.

Efficient attention (Sec. 3.4): ``efficient_ratio`` R shortens the keys and values of Eqs. 5 and 7
by an R x R conv of stride R (+ LayerNorm, as SegFormer's efficient self-attention) applied to the
map they are projected from (X_inter, resp. X_mid): one conv per attention. With R = 4 this
reproduces Table 7's parameter counts (SegFormer-B2 + SegDeformer 25.40M -> 27.59M).

Momentum tokens (``token_update="momentum"``, Table 5): the paper says only that the schedule is
MCIBI's [17]; ``memory.ClassCentreMemory`` is MCIBI's memory, updated after each training forward from
the ground-truth class centres of X_inter (detached), so ``forward_train`` needs the labels
(``Segmentor.forward_train(x, labels)``). Not decoupled, the memory gives K_mid and V_mid; decoupled,
it is the info half (V_mid, the carried cross-image information) and the class half (K_mid, trained
by L_attn) stays learnable. Under DDP the memory follows rank 0 (DDP broadcasts buffers before each
forward; MCIBI averages the processes' memories instead).

All N x N attentions go through ``F.scaled_dot_product_attention``: its fused kernels (CPU flash
included) never materialise the N x N matrix (16,384^2 entries per image at 512x512 for MiT).
Attn_mid is computed explicitly, being an output, but it is only N x N_cls. X_mid mixes N_cls < C
tokens, so Eq. 7 runs through them (``ContextAttention.forward_mixture``): the N x N attention at
width N_cls, not C (6 vs 256 on the training benchmark's classes), the same numbers in another order.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from transeg.errors import TransegError
from transeg.models.decoders.base import Decoder
from transeg.models.decoders.mlp import MLPDecoder, MLPDecoderConfig
from transeg.models.decoders.segdeformer.config import SegDeformerConfig
from transeg.models.decoders.segdeformer.memory import ClassCentreMemory
from transeg.models.decoders.uper import FCNAuxHead, UperNetFusion
from transeg.models.layers.conv import ConvNormAct
from transeg.models.layers.init import init_transformer_weights
from transeg.models.layers.tokens import tokens_to_map
from transeg.models.outputs import SegOutput


class ContextAttention(nn.Module):
    """Attention with Q, K, V Linear projections and no output projection (Eqs. 5, 7), through SDPA.
    query (B, N, C), source (B, M, C) -> (B, N, C); scale sqrt(C / heads). ``reduction`` R: the
    source, an (h, w) map, is first shortened R^2 times by an R x R stride-R conv + LayerNorm."""

    def __init__(self, dim: int, heads: int = 1, reduction: int | None = None) -> None:
        super().__init__()
        self.heads = heads
        self.q = nn.Linear(dim, dim)
        self.k = nn.Linear(dim, dim)
        self.v = nn.Linear(dim, dim)
        self.reduction = reduction
        if reduction is not None:
            self.sr = nn.Conv2d(dim, dim, reduction, reduction)
            self.norm = nn.LayerNorm(dim)

    def forward(self, query: torch.Tensor, source: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        if self.reduction is not None:
            source = self.norm(self.sr(tokens_to_map(source, size)).flatten(2).transpose(1, 2))
        b, n, c = query.shape
        h = self.heads

        def split(x: torch.Tensor) -> torch.Tensor:  # (B, L, C) -> (B, heads, L, C / heads)
            return x.reshape(b, x.shape[1], h, c // h).transpose(1, 2)

        out = F.scaled_dot_product_attention(split(self.q(query)), split(self.k(source)), split(self.v(source)))
        return out.transpose(1, 2).reshape(b, n, c)

    def forward_mixture(self, query: torch.Tensor, weights: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
        """``forward(query, weights @ tokens, size)`` for a source that mixes T < C tokens (T, C) with
        (B, M, T) ``weights`` whose rows sum to 1 (a softmax); one head, no reduction. (B, N, C) -> (B, N, C).

        Projections are affine and the rows sum to 1, so K = weights @ K_tok and V = weights @ V_tok
        with K_tok, V_tok (T, C) the projected tokens, and softmax(Q K^T) V = softmax((Q K_tok^T)
        weights^T) weights V_tok: the N x M attention runs at width T instead of C."""
        c = query.shape[2]
        q = self.q(query)
        k_tok = F.linear(tokens, self.k.weight, self.k.bias)  # (T, C)
        v_tok = F.linear(tokens, self.v.weight, self.v.bias)
        w = weights[:, None]  # (B, 1, M, T)
        mixed = F.scaled_dot_product_attention((q @ k_tok.T)[:, None], w, w, scale=c**-0.5)  # (B, 1, N, T)
        return mixed[:, 0] @ v_tok


class PreNormFeedForward(nn.Module):
    """Z -> Z + FFN(LN(Z)), FFN = Linear(C, 4C), GELU, Linear(4C, C). (B, N, C) -> (B, N, C)."""

    def __init__(self, dim: int, ratio: int = 4) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(dim)
        self.fc1 = nn.Linear(dim, dim * ratio)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(dim * ratio, dim)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return z + self.fc2(self.act(self.fc1(self.norm(z))))


class InternalContext(nn.Module):
    """M_inter (Eq. 5, Table 4): X_inter (B, N, C) -> Y_inter (B, N, C)."""

    def __init__(self, dim: int, cfg: SegDeformerConfig) -> None:
        super().__init__()
        depth = cfg.internal_depth
        self.layers = nn.ModuleList(
            ContextAttention(dim, cfg.internal_heads, cfg.efficient_ratio) for _ in range(depth))
        self.mlps = nn.ModuleList(PreNormFeedForward(dim) for _ in range(depth)) if cfg.mlp_after_internal else None

    def forward(self, x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        stream, total = x, None
        for i, layer in enumerate(self.layers):
            update = layer(stream, stream, size)
            if self.mlps is not None:
                update = self.mlps[i](update)
            total = update if total is None else total + update
            if i + 1 < len(self.layers):
                stream = stream + update
        return total


class ExternalContext(nn.Module):
    """M_exter (Eqs. 6, 7, 10): X_inter (B, N, C) -> Y_exter (B, N, C), Attn_mid (B, N, N_cls)."""

    def __init__(self, dim: int, num_classes: int, cfg: SegDeformerConfig) -> None:
        super().__init__()
        self.dim = dim
        self.decoupled = cfg.decoupled
        self.memory = None
        if cfg.token_update == "learnable":  # X_exter: (N_cls, 2C) = [info, class] decoupled, else (N_cls, C)
            self.tokens = nn.Parameter(torch.zeros(num_classes, 2 * dim if cfg.decoupled else dim))
            nn.init.trunc_normal_(self.tokens, std=0.02)
        else:
            self.memory = ClassCentreMemory(num_classes, dim, cfg.token_momentum, cfg.token_momentum_iters,
                                            cfg.token_momentum_power)
            if cfg.decoupled:
                self.class_tokens = nn.Parameter(nn.init.trunc_normal_(torch.zeros(num_classes, dim), std=0.02))
        self.q_mid = nn.Linear(dim, dim)
        self.k_mid = nn.Linear(dim, dim)
        self.v_mid = nn.Linear(dim, dim)
        self.exter = ContextAttention(dim, 1, cfg.efficient_ratio) if cfg.y_exter else None
        # Eq. 7 through the N_cls tokens (``ContextAttention.forward_mixture``) when N_cls < C and the
        # attention is full (with a reduction the stride-R conv sits between); False:
        # through X_mid (B, N, C), the literal order
        self.factored = True

    def token_halves(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(class tokens, info tokens), each (N_cls, C): the sources of K_mid and V_mid."""
        if self.memory is None:
            if not self.decoupled:
                return self.tokens, self.tokens
            return self.tokens[:, self.dim :], self.tokens[:, : self.dim]
        info = self.memory.tokens.clone()  # the buffer is updated in place after the forward
        return (self.class_tokens if self.decoupled else info), info

    def forward(self, x: torch.Tensor, size: tuple[int, int],
                labels: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """``labels`` (B, H, W), given in training with momentum tokens: the memory's update after the pass."""
        class_tokens, info_tokens = self.token_halves()
        # F.linear rather than calling the Linear: module hooks (FlopCounterMode's module tracker under
        # no_grad) cannot take a bare Parameter as a module input
        k_mid = F.linear(class_tokens, self.k_mid.weight, self.k_mid.bias)  # (N_cls, C)
        v_mid = F.linear(info_tokens, self.v_mid.weight, self.v_mid.bias)
        attn_mid = self.q_mid(x) @ k_mid.T * self.dim**-0.5  # (B, N, N_cls), Eq. 6
        p_mid = attn_mid.softmax(dim=-1)
        exter = self.exter
        if exter is not None and self.factored and exter.heads == 1 and exter.reduction is None \
                and v_mid.shape[0] < self.dim:
            y = exter.forward_mixture(x, p_mid, v_mid)  # Eq. 7 without X_mid (B, N, C)
        else:
            x_mid = p_mid @ v_mid  # (B, N, C)
            y = self.exter(x, x_mid, size) if self.exter is not None else x_mid  # Eq. 7
        if self.memory is not None and labels is not None:
            self.memory.update(tokens_to_map(x.detach(), size), labels)
        return y, attn_mid


class SegDeformer(Decoder):
    """Paper-mode SegDeformer. [(B, C_i, H_i, W_i)] -> logits (B, K, H_0, W_0)."""

    def __init__(self, in_channels: Sequence[int], num_classes: int, cfg: SegDeformerConfig) -> None:
        super().__init__()
        self.config = cfg
        self.num_classes = num_classes
        self.onnx_dynamic_size = cfg.fusion != "uper"  # UperNet's PPM exports at a fixed size only
        c = cfg.channels
        if cfg.fusion == "mlp":
            # its dropout and classifier are ours: a trained SegFormer head loads into ``fusion`` as is
            self.fusion = MLPDecoder(in_channels, num_classes, MLPDecoderConfig(embed_dim=c, dropout=cfg.dropout))
            self.fuse_extra = nn.Sequential(*(ConvNormAct(c, c) for _ in range(cfg.fuse_layers - 1)))
        else:
            self.fusion = UperNetFusion(in_channels, c)
            self.dropout = nn.Dropout2d(cfg.dropout)
            self.classifier = nn.Conv2d(c, num_classes, 1)
            nn.init.normal_(self.classifier.weight, 0.0, 0.01)  # as UperNet's (mmseg's conv_seg)
            nn.init.zeros_(self.classifier.bias)
            if cfg.uper_aux_channels:
                if len(in_channels) < 3:
                    raise TransegError(f"SegDeformerConfig: uper_aux_channels needs 3 or more encoder features, "
                                       f"got {len(in_channels)}")
                self.uper_aux = FCNAuxHead(in_channels[2], cfg.uper_aux_channels, num_classes, cfg.dropout)
        self.internal = InternalContext(c, cfg) if cfg.internal else None
        self.external = ExternalContext(c, num_classes, cfg) if cfg.external else None
        for module in (self.internal, self.external):
            if module is not None:
                module.apply(init_transformer_weights)

    def forward(self, features: Sequence[torch.Tensor]) -> torch.Tensor:
        return self.decode(features)[0]

    def forward_train(self, features: Sequence[torch.Tensor], labels: torch.Tensor | None = None) -> SegOutput:
        """The logits and, unless switched off, the mid attention logits ``"attn"`` (B, N_cls, H_0, W_0)
        (weight alpha) and the UperNet auxiliary head's ``"aux"`` (weight ``uper_aux_weight``).
        ``labels`` (B, H, W): the ground truth at the input size, which momentum tokens need in training."""
        momentum = self.external is not None and self.external.memory is not None
        if momentum and self.training and labels is None:
            raise TransegError("SegDeformer: token_update 'momentum' updates its memory from the labels; "
                               "call forward_train(features, labels) in training")
        logits, attn_mid = self.decode(features, labels if momentum and self.training else None)
        out = SegOutput(logits)
        if self.config.has_attn_loss:
            out.aux["attn"], out.aux_weights["attn"] = attn_mid, self.config.aux_weight
        if self.config.uper_aux_channels:
            out.aux["aux"], out.aux_weights["aux"] = self.uper_aux(features[2]), self.config.uper_aux_weight
        return out

    def decode(self, features: Sequence[torch.Tensor],
               labels: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Logits (B, K, H_0, W_0) and Attn_mid as a map (B, N_cls, H_0, W_0) (None without M_exter);
        ``labels`` (B, H, W) update the momentum memory."""
        if self.config.fusion == "mlp":
            fused = self.fuse_extra(self.fusion.fused_features(features))
            dropout, classifier = self.fusion.dropout, self.fusion.classifier
        else:
            fused = self.fusion(features)
            dropout, classifier = self.dropout, self.classifier
        size = (fused.shape[2], fused.shape[3])
        x = fused.flatten(2).transpose(1, 2)  # X_inter (B, N, C)
        f_aug, attn_mid = x, None
        if self.internal is not None:
            f_aug = f_aug + self.internal(x, size)
        if self.external is not None:
            y_exter, attn_mid = self.external(x, size, labels)
            f_aug = f_aug + y_exter
            attn_mid = tokens_to_map(attn_mid, size)
        logits = classifier(dropout(tokens_to_map(f_aug, size)))
        return logits, attn_mid
