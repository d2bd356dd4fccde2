"""Putting a bank around a linear of the base: which bank class wraps which layer.

Apart from both bank modules so that neither imports the other: `lora_bank` knows nothing of
bitsandbytes, `quantized_bank` builds on `lora_bank`, and this module picks between them.
"""

from __future__ import annotations

from torch import nn

from ..backbones.quantize import is_quantized_linear
from .lora_bank import LoraBankLinear, Router
from .quantized_bank import QuantizedBankLinear


def bank_for(module: nn.Module) -> type[LoraBankLinear]:
    """The bank class that wraps `module`: a bitsandbytes linear gets the bank that never merges."""
    return QuantizedBankLinear if is_quantized_linear(module) else LoraBankLinear


def wrap(model: nn.Module, path: str, router: Router) -> LoraBankLinear:
    """Replace the `nn.Linear` at `path` with a bank around it (or return the existing bank)."""
    module = model.get_submodule(path)
    if isinstance(module, LoraBankLinear):
        return module
    if not isinstance(module, nn.Linear):
        raise TypeError(f"{path} is a {type(module).__name__}, not a linear layer")
    parent_path, _, child = path.rpartition(".")
    parent = model.get_submodule(parent_path) if parent_path else model
    bank = bank_for(module)(module, router)
    setattr(parent, child, bank)
    return bank
