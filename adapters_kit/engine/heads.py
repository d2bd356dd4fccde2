"""The head bank: each resident version's small head (and a dense saved whole) applied to its
own rows of a pass through the shared base.

Heads are small, so rows are grouped by version (one matmul per version in the batch) rather
than stacked like the LoRA banks.
"""

from __future__ import annotations

import torch

from ..backbones import encoder
from .slots import ResidentTask


def head_outputs(arch: str, tasks: list[ResidentTask], hidden: torch.Tensor,
                 shared: torch.Tensor | None, lengths: list[int], order: list[int]
                 ) -> list[torch.Tensor]:
    """Raw outputs per row, in input order, on the CPU.

    `tasks`, `hidden` [B, T, hidden] and `shared` [B, hidden] (the base's head dense over the
    first token, activated; None when no row is of a sequence kind) are in pass order, rows of
    one version next to each other; `lengths` are the rows' token counts in pass order and
    `order[i]` is the input index of pass row i. A sequence kind gives [n_outputs] per row, a
    token-level kind [tokens, n_outputs].
    """
    spans: list[tuple[ResidentTask, int, int, torch.Tensor]] = []
    start = 0
    while start < len(tasks):
        t, end = tasks[start], start + 1
        while end < len(tasks) and tasks[end] is t:
            end += 1
        if t.spec.is_sequence:
            feats = shared[start:end]
            if t.dense is not None:
                w, b = t.dense
                feats = encoder.dense_activation(arch, hidden[start:end, 0] @ w.T + b)
        else:
            feats = hidden[start:end]  # token-level heads read every position
        logits = feats @ t.head_weight.T
        if t.head_bias is not None:
            logits = logits + t.head_bias
        spans.append((t, start, end, logits))
        start = end
    out: list[torch.Tensor] = [None] * len(tasks)  # type: ignore[list-item]
    for (t, start, end, _), logits in zip(spans, to_cpu([s[3] for s in spans])):
        for i in range(end - start):
            out[order[start + i]] = logits[i] if t.spec.is_sequence else logits[i, : lengths[start + i]]
    return out


def to_cpu(tensors: list[torch.Tensor]) -> list[torch.Tensor]:
    """`tensors` on the CPU: from a GPU in one copy (one sync, not one per head), not K."""
    if not tensors or tensors[0].device.type == "cpu":
        return tensors
    flat = torch.cat([t.reshape(-1) for t in tensors]).cpu()
    return [part.view(t.shape) for part, t in zip(flat.split([t.numel() for t in tensors]), tensors)]
