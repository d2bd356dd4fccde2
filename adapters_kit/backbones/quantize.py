"""Quantized bases: the frozen encoder's linears as bitsandbytes 8-bit (LLM.int8) or 4-bit (NF4)
layers, loaded the way plain peft users load them (`from_pretrained(quantization_config=...)`).

What stays in full precision, and why:

- The head: DistilBERT's `pre_classifier`, ALBERT's `pooler`, and the output layers
  (`classifier`, `qa_outputs`). The output layer's base is zero and its LoRA product *is* the
  task's head; the dense layer feeds the logits directly, and is 1% of the weights. Quantized,
  bitsandbytes' int8 weights also cannot take `requires_grad`, which a `full` head needs ("only
  Tensors of floating point dtype can require gradients").
- LayerNorms, biases and the position (and token-type) embeddings: a few KB.
- The word-embedding table is not a linear, so bitsandbytes' linears never touch it, yet it is
  35% of DistilBERT-base. It is kept in bf16 (`EMBEDDINGS_DTYPE`), halving it: the lookup is a
  gather and the sum with the fp32 position embeddings is fp32 again. bitsandbytes' own
  `Embedding8bit`/`Embedding4bit` cannot write a state dict, which peft reads to save an adapter.

`Quantization.record()` is what an adapter trained on such a base keeps in task.json
(`backbone.quantization`) beside the fingerprint of the *unquantized* base.
"""

from __future__ import annotations

import importlib
import logging
from dataclasses import dataclass

import torch

from ..errors import BackboneError

QUANTIZE_MODES = ("8bit", "4bit")
FULL_PRECISION_MODULES = ["pre_classifier", "classifier", "pooler", "qa_outputs"]
"""transformers' `llm_int8_skip_modules` (matched as name suffixes): the head modules."""
EMBEDDINGS_DTYPE = torch.bfloat16
INSTALL_HINT = "pip install 'adapters-kit[quant]'"


class _CastNote(logging.Filter):
    """bitsandbytes logs a warning on every 8-bit forward that its fp32 input is cast to fp16
    for quantizing: that is how LLM.int8 works, said once here rather than on every batch."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "inputs will be cast from" not in record.getMessage()


_CAST_NOTE = _CastNote()


def require_bitsandbytes():
    """The bitsandbytes module, or a BackboneError saying how to install it."""
    try:
        return importlib.import_module("bitsandbytes")
    except ImportError as e:
        raise BackboneError(f"quantized bases need bitsandbytes, which is not installed ({e}); "
                            f"install it with `{INSTALL_HINT}`, or leave quantize unset") from None


@dataclass(frozen=True)
class Quantization:
    """How a base's linears are quantized: `mode` 8bit or 4bit (NF4, `double_quant` also
    quantizes the 4-bit blocks' scales, about 0.4 bits a weight less)."""

    mode: str
    double_quant: bool = False

    def __post_init__(self) -> None:
        if self.mode not in QUANTIZE_MODES:
            raise BackboneError(f"quantize {self.mode!r} is not one of {list(QUANTIZE_MODES)} (or "
                                "None for the full-precision base)")
        if self.double_quant and self.mode != "4bit":
            raise BackboneError("double_quant applies to quantize='4bit' only; drop it or use 4bit")

    @classmethod
    def of(cls, quantize: str | Quantization | None, double_quant: bool = False
           ) -> Quantization | None:
        """`quantize` as a Quantization (None stays None: the full-precision base)."""
        if quantize is None or isinstance(quantize, Quantization):
            return quantize
        return cls(quantize, double_quant)

    @classmethod
    def from_record(cls, record) -> Quantization | None:
        """The quantization a task.json's `backbone.quantization` names (None: full precision)."""
        if not isinstance(record, dict):
            return None
        return cls(record["mode"], bool(record.get("double_quant", False)))

    def record(self) -> dict:
        """What task.json keeps under `backbone.quantization`."""
        return {"mode": self.mode, "quant_type": "nf4" if self.mode == "4bit" else "int8",
                "double_quant": self.double_quant, "full_precision": FULL_PRECISION_MODULES,
                "embeddings_dtype": str(EMBEDDINGS_DTYPE).removeprefix("torch.")}

    def describe(self) -> str:
        return "int8 (LLM.int8)" if self.mode == "8bit" else \
            "nf4" + (" with double quantization" if self.double_quant else "")

    def config(self):
        """The transformers `BitsAndBytesConfig` for this quantization."""
        require_bitsandbytes()
        from transformers import BitsAndBytesConfig

        if self.mode == "8bit":
            return BitsAndBytesConfig(load_in_8bit=True, llm_int8_skip_modules=FULL_PRECISION_MODULES)
        return BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4",
                                  bnb_4bit_use_double_quant=self.double_quant,
                                  bnb_4bit_compute_dtype=torch.float32,
                                  llm_int8_skip_modules=FULL_PRECISION_MODULES)

    def load_kwargs(self, device: torch.device | str | None = None) -> dict:
        """`from_pretrained` keywords: the config, and where to put the model (None: transformers
        picks the current accelerator, else the CPU; bitsandbytes quantizes as it places)."""
        kwargs = {"quantization_config": self.config()}
        if device is not None:
            kwargs["device_map"] = {"": str(device)}
        return kwargs

    def finish(self, model: torch.nn.Module) -> torch.nn.Module:
        """After loading: the word embeddings to `EMBEDDINGS_DTYPE` (see the module docstring),
        the full-precision tensors copied out of the checkpoint's memory map
        (`own_full_precision_tensors`), and bitsandbytes' CPU repacking of 4-bit weights
        turned off (`keep_4bit_layout`)."""
        emb = model.get_input_embeddings()
        emb.weight.data = emb.weight.data.to(EMBEDDINGS_DTYPE)
        own_full_precision_tensors(model)
        keep_4bit_layout(model)
        logging.getLogger("bitsandbytes.autograd._functions").addFilter(_CAST_NOTE)
        return model


def own_full_precision_tensors(model: torch.nn.Module) -> None:
    """Give the tensors left in full precision (norms, biases, heads, position embeddings)
    memory of their own.

    transformers loads a safetensors checkpoint memory-mapped, and a tensor it does not convert
    stays a view of that map. Quantizing reads every linear's pages, so while any view lives the
    whole checkpoint stays mapped and counts in the process's RSS (86 MB for embedded-distilbert
    at 4 or 8 bits, measured). These copies cost what those few tensors hold (under 1 MB there)."""
    with torch.no_grad():
        for module in model.modules():
            if is_quantized_linear(module):
                if getattr(module, "bias", None) is not None:
                    module.bias.data = module.bias.data.clone()
                continue
            for p in module.parameters(recurse=False):
                if p.is_floating_point():
                    p.data = p.data.clone()


def keep_4bit_layout(model: torch.nn.Module) -> None:
    """Stop bitsandbytes repacking 4-bit weights for its CPU inference kernel.

    On a CPU with AVX512-BF16, a `Linear4bit`'s first forward in eval mode without gradients
    (any evaluation) rewrites its weight, for good, into the layout of an inference-only kernel
    (`gemv_4bit`, computing in bf16). From then on `matmul_4bit` takes that kernel in training
    too: it has no backward, and its in-place bias add fails with "a view of a leaf Variable
    that requires grad is being used in an in-place operation" (a layer without bias would
    instead drop the gradient to the layers below it, silently). That is the QLoRA 4-bit
    failure seen after an evaluation, or after a first test forward. The kernel also moves
    outputs by bf16 rounding (0.013 on outputs of 2.8 for a 768-wide layer) and was slower
    here than the regular dequantize-and-GEMM path (0.24 s against 0.14 s for 2,048 rows), so
    evaluation, serving and training all keep the regular path: one function everywhere."""
    for module in model.modules():
        if hasattr(module, "support_avx512bf16_for_cpu") and is_quantized_linear(module):
            module.support_avx512bf16_for_cpu = False


def is_quantized_linear(module: torch.nn.Module) -> bool:
    """Whether `module` is a bitsandbytes 8-bit or 4-bit linear (its weight is not a float)."""
    name = type(module).__name__
    return name in ("Linear8bitLt", "Linear4bit", "LinearNF4", "LinearFP4") and \
        type(module).__module__.startswith("bitsandbytes")


def quantized_layers(model: torch.nn.Module) -> list[str]:
    """Paths of the model's bitsandbytes linears."""
    return [n for n, m in model.named_modules() if is_quantized_linear(m)]


def quantization_of(model: torch.nn.Module) -> Quantization | None:
    """The quantization a loaded model carries (None: a full-precision model)."""
    q = getattr(model, "_adapters_kit_quantization", None)
    return q if isinstance(q, Quantization) else None
