"""The backbone's encoder as the heads read it: inputs, hidden states, the head's dense layer.

Facts of the architecture (DistilBERT or ALBERT), not of any task kind.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def model_inputs(arch: str, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                 sep_id: int | None) -> dict[str, torch.Tensor]:
    """The keyword inputs the backbone takes, as its tokenizer would give them.

    ALBERT has token types: 0 up to and including the first [SEP], 1 after it (the second
    text of a pair, a QA context), 0 on padding. DistilBERT has none.
    """
    out = {"input_ids": input_ids, "attention_mask": attention_mask}
    if arch == "albert" and sep_id is not None:
        is_sep = (input_ids == sep_id).long()
        out["token_type_ids"] = ((is_sep.cumsum(1) - is_sep) >= 1).long() * attention_mask
    return out


def encoder_module(arch: str, model: torch.nn.Module) -> torch.nn.Module:
    """The encoder inside a transformers head model (ALBERT's includes its pooler)."""
    return model.distilbert if arch == "distilbert" else model.albert


def encoder_hidden(arch: str, model: torch.nn.Module, input_ids: torch.Tensor,
                   attention_mask: torch.Tensor, sep_id: int | None = None) -> torch.Tensor:
    """Every token's final hidden state [B, T, hidden], as the HF token and QA heads read it."""
    return encoder_module(arch, model)(**model_inputs(arch, input_ids, attention_mask, sep_id))[0]


def dense_activation(arch: str, x: torch.Tensor) -> torch.Tensor:
    """DistilBERT: ReLU after `pre_classifier`; ALBERT: tanh after the pooler (eval mode)."""
    return F.relu(x) if arch == "distilbert" else torch.tanh(x)


def dense_module(arch: str, model: torch.nn.Module) -> torch.nn.Module:
    from . import HEAD_DENSE_PATH

    return model.get_submodule(HEAD_DENSE_PATH[arch])
