"""The engine on a quantized base: the bank around bitsandbytes' 8-bit and 4-bit linears, and
the base model with the fingerprint of its unquantized weights.

The base output of a wrapped layer always comes from bitsandbytes' kernel (`self.base(x)`), and
the LoRA factors add to it in full precision, as peft's bitsandbytes LoRA layers do, so a batch
here equals plain peft on the same quantized model.

The bank's merge path (`W + B A` for a long one-adapter batch) is never taken on a quantized
layer: it falls back to the two-factor path. Merging would need the weight dequantized, a full
fp32 copy of the layer per pass (the memory the quantized base exists to save), and would then
compute another function: LLM.int8 quantizes the activations too and runs outlier columns
apart, so `x @ dequant(W)^T` is not what the 8-bit kernel gives, and the answer for a row would
change with the batch it came in. The two factors cost tokens * r * (d_in + d_out), a few
percent of the layer.
"""

from __future__ import annotations

import logging

import torch
from torch import nn

from ..backbones import Backbone, fingerprint
from ..backbones.quantize import Quantization, is_quantized_linear
from .lora_bank import LoraBankLinear

log = logging.getLogger("adapters_kit.engine")


class QuantizedBankLinear(LoraBankLinear):
    """A bank around a bitsandbytes `Linear8bitLt` / `Linear4bit`: the base output from their
    kernel, the adapters' factors in fp32, never merged into the (integer) weight."""

    def merges_for(self, tokens: int) -> bool:
        return False


def bank_for(module: nn.Module) -> type[LoraBankLinear]:
    """The bank class that wraps `module`."""
    return QuantizedBankLinear if is_quantized_linear(module) else LoraBankLinear


def load_base(backbone: Backbone, quantization: Quantization | None
              ) -> tuple[torch.nn.Module, str, int]:
    """The frozen serving base, the fingerprint adapters are checked against, and its
    parameter count at full precision (which bounds an adapter's size).

    On a quantized base the fingerprint is the unquantized base's, the one its adapters record
    (an adapter trained on it, or on the full-precision base, is the same base's adapter)."""
    model = backbone.load_model(num_labels=1)
    fp, numel = fingerprint(model), sum(p.numel() for p in model.parameters())
    if quantization is not None:
        del model
        model = backbone.load_model(num_labels=1, quantize=quantization)
        log.info("serving %s on a %s base (%s); head modules, norms and biases in full precision",
                 backbone.name, quantization.mode, quantization.describe())
    for p in model.parameters():
        p.requires_grad_(False)
    return model, fp, numel


def quantization_note(record, quantization: Quantization | None, path) -> str | None:
    """A sentence when an adapter trained with `record` (task.json's backbone.quantization)
    serves on a base quantized as `quantization` (None: full precision), else None."""
    trained = Quantization.from_record(record)
    if trained == quantization:
        return None
    was = "the full-precision base" if trained is None else f"a {trained.mode} base"
    now = "the full-precision base" if quantization is None else f"a {quantization.mode} base"
    return (f"adapter {path} was trained on {was} and now serves on {now} (the same base's "
            "weights, so it loads; the README's quantization section gives the accuracy measured "
            "across bases)")
