"""SegDeformer as released by its authors: ``SegDeformerHead3`` (lygsbw/segdeformer, an mmseg 0.29 fork).

This is the head behind the published checkpoints and numbers; it differs from the paper's Eqs. 5-10
(see ``paper.py`` for those). With C = ``channels`` (256 in every released config):

1. Fusion as MMSegmentation's ``SegformerHead`` (``decoders/mmseg_mlp.py``, whose fusion function it
   shares): per stage a 1x1 ConvModule (conv without bias + BN + ReLU) to C at the stage's
   resolution, bilinear upsampling to the first map, concatenation in c1..c4 order, a 1x1 fusion
   ConvModule to C (by default each stage's slice of the fusion conv is applied before upsampling and
   the results summed; ``fused_projection = False`` runs the literal order).
2. Class tokens (``Class_Token_Seg3``): ``cls_token`` and ``prop_token`` (1, N_cls, C), truncated
   normal std 0.02. q = Linear(C, C)(pixels), k = Linear(C, C)(cls_token), both with bias;
   the aux logits are (k C^-0.5) q^T over the pixel columns: (B, N_cls, H, W), raw, not softmaxed.
   (The official code projects cat[cls_token; pixels] by q and drops the class columns afterwards:
   the same numbers.)
3. ``TransformerClassToken3``: x1 = SelfAttentionBlock(x, x), full N x N attention at 1/4
   resolution; context = SoftMax over classes of the aux logits @ prop_token, a per-pixel (B, C, H, W)
   map; x2 = SelfAttentionBlock(query=x, key=value=context), separate weights. x = x + x1 + x2, no FFN.
   SelfAttentionBlock is MMSegmentation's, single head: query, key, value and out projections are
   1x1 ConvModules (conv without bias + BN + ReLU), softmax(q k^T C^-0.5) v, through SDPA.
4. Dropout2d, 1x1 ``classifier`` (mmseg's ``conv_seg``, normal std 0.01).

Loss: CE(logits) + 0.4 CE(aux logits), both upsampled to the label size (``forward_train``'s aux
``"attn"``). Initialisation as the official code: ConvModule convs normal(0, sqrt(2 / fan_out)), BN
(1, 0), the class-token Linears PyTorch's default. ``transeg.weights.segdeformer`` maps the official
checkpoint keys onto these modules.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from transeg.models.decoders.base import Decoder
from transeg.models.decoders.mmseg_mlp import segformer_head_fusion
from transeg.models.decoders.segdeformer.config import SegDeformerConfig
from transeg.models.layers.conv import ConvNormAct
from transeg.models.layers.tokens import tokens_to_map
from transeg.models.outputs import SegOutput


class SelfAttentionBlock(nn.Module):
    """MMSegmentation's SelfAttentionBlock as SegDeformerHead3 configures it (single head, ConvModule
    projections, matmul_norm, with_out). query (B, C, H, W), source (B, C, H', W') -> (B, C, H, W)."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.query = ConvNormAct(dim, dim)
        self.key = ConvNormAct(dim, dim)
        self.value = ConvNormAct(dim, dim)
        self.out = ConvNormAct(dim, dim)

    def forward(self, query: torch.Tensor, source: torch.Tensor) -> torch.Tensor:
        def tokens(x: torch.Tensor) -> torch.Tensor:  # (B, C, H, W) -> (B, 1, HW, C)
            return x.flatten(2).transpose(1, 2).unsqueeze(1)

        q, k, v = tokens(self.query(query)), tokens(self.key(source)), tokens(self.value(source))
        context = F.scaled_dot_product_attention(q, k, v)  # scale C^-0.5: one head of width C
        return self.out(tokens_to_map(context.squeeze(1), (query.shape[2], query.shape[3])))


class SegDeformerReleased(Decoder):
    """Released-mode SegDeformer. [(B, C_i, H_i, W_i)] -> logits (B, K, H_0, W_0)."""

    def __init__(self, in_channels: Sequence[int], num_classes: int, cfg: SegDeformerConfig) -> None:
        super().__init__()
        self.config = cfg
        c = cfg.channels
        self.proj = nn.ModuleList(ConvNormAct(ch, c) for ch in in_channels)
        self.fuse = ConvNormAct(c * len(in_channels), c)
        self.fused_projection = True
        self.class_q = nn.Linear(c, c)
        self.class_k = nn.Linear(c, c)
        self.cls_token = nn.Parameter(nn.init.trunc_normal_(torch.zeros(1, num_classes, c), std=0.02))
        self.prop_token = nn.Parameter(nn.init.trunc_normal_(torch.zeros(1, num_classes, c), std=0.02))
        self.internal = SelfAttentionBlock(c)
        self.external = SelfAttentionBlock(c)
        self.dropout = nn.Dropout2d(cfg.dropout)
        self.classifier = nn.Conv2d(c, num_classes, 1)
        nn.init.normal_(self.classifier.weight, 0.0, 0.01)
        nn.init.zeros_(self.classifier.bias)

    def forward(self, features: Sequence[torch.Tensor]) -> torch.Tensor:
        return self.decode(features)[0]

    def forward_train(self, features: Sequence[torch.Tensor], labels: torch.Tensor | None = None) -> SegOutput:
        """The logits and the class-token aux logits ``"attn"`` (raw), weighted ``aux_weight`` (0.4)."""
        logits, aux = self.decode(features)
        return SegOutput(logits, {"attn": aux}, {"attn": self.config.aux_weight})

    def fused_map(self, features: Sequence[torch.Tensor]) -> torch.Tensor:
        """The SegformerHead fusion: [(B, C_i, H_i, W_i)] -> (B, C, H_0, W_0)."""
        return segformer_head_fusion(self.proj, self.fuse, features, self.fused_projection)

    def class_logits(self, x: torch.Tensor) -> torch.Tensor:
        """Class_Token_Seg3: fused map (B, C, H, W) -> raw aux logits (B, N_cls, H, W)."""
        c = self.config.channels
        q = self.class_q(x.flatten(2).transpose(1, 2))  # (B, HW, C)
        k = F.linear(self.cls_token, self.class_k.weight, self.class_k.bias) * c**-0.5  # (1, N_cls, C)
        return (k @ q.transpose(1, 2)).reshape(x.shape[0], -1, x.shape[2], x.shape[3])

    def decode(self, features: Sequence[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """Logits (B, K, H_0, W_0) and raw aux logits (B, N_cls, H_0, W_0)."""
        x = self.fused_map(features)
        aux = self.class_logits(x)
        x1 = self.internal(x, x)
        context = aux.flatten(2).softmax(dim=1).transpose(1, 2) @ self.prop_token  # (B, HW, C)
        x2 = self.external(x, tokens_to_map(context, (x.shape[2], x.shape[3])))
        logits = self.classifier(self.dropout(x + x1 + x2))
        return logits, aux
