"""QLoRA: LoRA trained on a bitsandbytes-quantized base (`TrainConfig.quantize`), and
bitsandbytes' 8-bit AdamW (`TrainConfig.optim = "adamw8bit"`)."""

from __future__ import annotations

import torch

from ..backbones import Backbone
from ..backbones.quantize import Quantization, require_bitsandbytes
from ..tasks.kinds import Kind


def quantized_base(kind: Kind, backbone: Backbone, num_outputs: int,
                   quantization: Quantization) -> torch.nn.Module:
    """The kind's base with its encoder linears quantized, frozen, ready for peft.

    Not peft's `prepare_model_for_kbit_training`: what it does for a half-precision base (norms
    and heads cast to fp32) is already so here, since the base loads in fp32 and only its
    linears are quantized; it would also cast the bf16 word embeddings back to fp32, and its
    gradient checkpointing recomputes every layer's forward for memory these small encoders
    do not need."""
    model = kind.load_model(backbone, num_outputs, quantize=quantization)
    for p in model.parameters():
        p.requires_grad_(False)
    return model


def adamw8bit(groups: list[dict], lr: float) -> torch.optim.Optimizer:
    """bitsandbytes' AdamW with 8-bit blockwise moments (for tensors of at least 4,096 values;
    smaller ones, such as rank-8 factors of a 384-wide layer, keep 32-bit moments)."""
    bnb = require_bitsandbytes()
    return bnb.optim.AdamW8bit(groups, lr=lr)
