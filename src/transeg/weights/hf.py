"""Translation between transformers' ``SegformerConfig`` (as a JSON dict) and ModelConfig."""

from __future__ import annotations

from typing import Any

from transeg.errors import TransegError
from transeg.models.config import ModelConfig
from transeg.models.decoders.mlp import MLPDecoderConfig
from transeg.models.encoders.mit import MiTConfig
from transeg.models.zoo import ZOO

# transformers builds every LayerNorm with the default eps, whatever its config says.
HF_LAYER_NORM_EPS = 1e-5


def hf_config_to_model_config(hf: dict[str, Any], source: str) -> ModelConfig:
    if hf.get("model_type") != "segformer":
        raise TransegError(f"{source}: model_type {hf.get('model_type')!r} is not a SegFormer")
    try:
        mlp_ratios = set(hf["mlp_ratios"])
        if len(mlp_ratios) != 1:
            raise TransegError(f"{source}: per-stage mlp_ratios {hf['mlp_ratios']} are not supported")
        encoder = MiTConfig(
            widths=tuple(hf["hidden_sizes"]), depths=tuple(hf["depths"]),
            heads=tuple(hf["num_attention_heads"]), sr_ratios=tuple(hf["sr_ratios"]),
            patch_sizes=tuple(hf["patch_sizes"]), strides=tuple(hf["strides"]),
            mlp_ratio=mlp_ratios.pop(), in_channels=hf.get("num_channels", 3),
            drop_path_rate=hf.get("drop_path_rate", 0.1),
            norm_eps=HF_LAYER_NORM_EPS, embed_norm_eps=HF_LAYER_NORM_EPS,
        )
        decoder = MLPDecoderConfig(embed_dim=hf["decoder_hidden_size"],
                                   dropout=hf.get("classifier_dropout_prob", 0.1))
    except KeyError as exc:
        raise TransegError(f"{source}: missing key {exc.args[0]!r}") from None
    id2label = hf.get("id2label") or {}
    num_classes = hf.get("num_labels") or len(id2label) or 2
    names = tuple(id2label[str(i)] for i in range(num_classes)) if len(id2label) == num_classes else None
    name = next((n for n, c in ZOO.items() if c.encoder == "mit" and c.encoder_config.widths == encoder.widths
                 and c.encoder_config.depths == encoder.depths and c.decoder_config == decoder), "custom")
    return ModelConfig(encoder="mit", encoder_config=encoder, decoder="mlp", decoder_config=decoder,
                       num_classes=num_classes, name=name, class_names=names)


def model_config_to_hf_config(config: ModelConfig) -> dict[str, Any]:
    if config.encoder != "mit" or config.decoder != "mlp":
        raise TransegError(f"only SegFormer models convert to transformers, not {config.name!r}")
    enc: MiTConfig = config.encoder_config
    if enc.pos_embed or not enc.mix_ffn or config.decoder_config.in_stages is not None:
        raise TransegError(f"{config.name}: transformers' Segformer has no position embeddings, plain FFN or "
                           "decoder stage selection; only the standard SegFormer converts")
    names = config.class_names or tuple(f"class_{i}" for i in range(config.num_classes))
    return {
        "architectures": ["SegformerForSemanticSegmentation"],
        "model_type": "segformer",
        "num_channels": enc.in_channels,
        "num_encoder_blocks": len(enc.depths),
        "depths": list(enc.depths),
        "sr_ratios": list(enc.sr_ratios),
        "hidden_sizes": list(enc.widths),
        "patch_sizes": list(enc.patch_sizes),
        "strides": list(enc.strides),
        "num_attention_heads": list(enc.heads),
        "mlp_ratios": [enc.mlp_ratio] * len(enc.depths),
        "hidden_act": "gelu",
        "hidden_dropout_prob": 0.0,
        "attention_probs_dropout_prob": 0.0,
        "classifier_dropout_prob": config.decoder_config.dropout,
        "drop_path_rate": enc.drop_path_rate,
        "layer_norm_eps": 1e-6,
        "decoder_hidden_size": config.decoder_config.embed_dim,
        "semantic_loss_ignore_index": 255,
        "reshape_last_stage": True,
        "id2label": {str(i): n for i, n in enumerate(names)},
        "label2id": {n: i for i, n in enumerate(names)},
    }
