"""The frozen serving base: loaded (full precision or bitsandbytes-quantized) with the
fingerprint adapters are checked against, and what a load says when an adapter trained on one
form of the base serves on another."""

from __future__ import annotations

import logging

import torch

from ..backbones import Backbone, fingerprint
from ..backbones.quantize import Quantization

log = logging.getLogger("adapters_kit.engine")


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
