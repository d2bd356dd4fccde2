"""What a load computes from an adapter's files before it touches a slot: the checks against
the base, the LoRA pairs to write into the banks, and the `ResidentTask` holding its head.

A refusal raises AdapterFileError whatever its cause, so a bad adapter fails its load alone.
"""

from __future__ import annotations

import torch

from ..adapters.store import AdapterFiles, check_against_base
from ..backbones.quantize import Quantization
from ..errors import AdapterFileError
from ..tasks.kinds import kind_of
from .base import log, quantization_note
from .slots import ResidentTask

Pairs = dict[str, tuple[torch.Tensor, torch.Tensor, float]]
"""Module path -> (A [r, d_in], B [d_out, r], scale), as the files hold them."""


def admit(files: AdapterFiles, name: str, model: torch.nn.Module, fingerprint: str,
          quantization: Quantization | None, dense_name: str, device: torch.device
          ) -> tuple[ResidentTask, Pairs]:
    """The version `files` would become under `name` (no slot yet) and its LoRA pairs, checked
    against `model` (the serving base, `fingerprint` its unquantized weights' fingerprint)."""
    try:
        return _admit(files, name, model, fingerprint, quantization, dense_name, device)
    except AdapterFileError:
        raise
    except Exception as e:  # a fault of the files no check names: still theirs alone
        raise AdapterFileError(f"adapter {files.path} refused: {type(e).__name__}: {e}; "
                               "re-export the adapter. Nothing was loaded from it") from None


def _admit(files, name, model, fingerprint, quantization, dense_name, device):
    check_against_base(files, model, fingerprint)
    note = quantization_note(files.task["backbone"].get("quantization"), quantization, files.path)
    if note:
        log.info(note)
    spec = files.spec
    hidden = model.config.hidden_size if hasattr(model.config, "hidden_size") else model.config.dim
    pairs = {m: (a, b, files.scale(m)) for m, (a, b) in files.lora_pairs().items()}
    w, bias = files.head()
    dense = files.dense_override(dense_name)

    def here(t: torch.Tensor) -> torch.Tensor:  # a head tensor: fp32 on the base's device
        return t.to(device=device, dtype=torch.float32)

    if dense is not None:
        if tuple(dense[0].shape) != (hidden, hidden) or tuple(dense[1].shape) != (hidden,):
            raise AdapterFileError(f"adapter {files.path} refused: its {dense_name} is "
                                   f"{tuple(dense[0].shape)} but this base needs ({hidden}, "
                                   f"{hidden}); use the backbone it was trained on")
        dense = (here(dense[0]), here(dense[1]))
    resident = ResidentTask(
        name=name, slot=-1, kind=spec.kind, labels=list(spec.labels), pair=spec.is_pair,
        max_length=spec.max_length, head_weight=here(w),
        head_bias=None if bias is None else here(bias), dense=dense, path=files.path,
        nbytes=files.nbytes, digest=files.digest, spec=spec, impl=kind_of(spec))
    return resident, pairs
