"""The engine on a quantized base: the bank around bitsandbytes' 8-bit and 4-bit linears (the
base model and its fingerprint are loaded in `base`).

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

from .lora_bank import LoraBankLinear


class QuantizedBankLinear(LoraBankLinear):
    """A bank around a bitsandbytes `Linear8bitLt` / `Linear4bit`: the base output from their
    kernel, the adapters' factors in fp32, never merged into the (integer) weight."""

    def merges_for(self, tokens: int) -> bool:
        return False
