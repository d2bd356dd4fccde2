"""A linear layer that holds every resident LoRA adapter in stacked slots.

Each adapted `nn.Linear` of the frozen base is wrapped once. Adapters live in slots of two
banks, padded to the largest rank; slot 0 is all zeros and means "no adapter". A batch carries
one slot per row, so rows of different tasks share one pass through the base:

    y = base(x) + (x @ A[slot]^T) @ B[slot]^T        (B is stored pre-multiplied by the scale)

A batch whose rows all use one adapter and that is long enough merges that adapter into the
weight for this pass instead (`LoraBankLinear.merges_for`): the same sum, one GEMM.

Switching tasks changes an index; loading an adapter writes one slot.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator

import torch
from torch import nn


class Router:
    """Which slot each row of the current batch uses; one value per thread."""

    def __init__(self) -> None:
        self._local = threading.local()

    @property
    def rows(self) -> torch.Tensor | None:
        return getattr(self._local, "rows", None)

    @property
    def single(self) -> int | None:
        return getattr(self._local, "single", None)

    @property
    def merged(self) -> dict:
        """Weights merged for the current pass, per bank: ALBERT's shared layer runs at every
        depth, and merges its adapter once per pass, not once per depth."""
        return getattr(self._local, "merged", None)

    @contextlib.contextmanager
    def route(self, slots: list[int]) -> Iterator[None]:
        """Route row i to `slots[i]` for the duration of a forward pass."""
        distinct = set(slots)
        self._local.rows = torch.tensor(slots, dtype=torch.long)  # [B]
        self._local.single = slots[0] if len(distinct) == 1 else None
        self._local.merged = {}
        try:
            yield
        finally:
            self._local.rows = None
            self._local.single = None
            self._local.merged = None


class LoraBankLinear(nn.Module):
    """A frozen `nn.Linear` plus a bank of LoRA slots."""

    def __init__(self, base: nn.Linear, router: Router) -> None:
        super().__init__()
        self.base = base
        self.router = router
        # [capacity, r_max, d_in]; slot 0 stays zero
        self.register_buffer("lora_A", torch.zeros(0, 0, base.in_features), persistent=False)
        # [capacity, d_out, r_max]; stored as scale * B
        self.register_buffer("lora_B", torch.zeros(0, base.out_features, 0), persistent=False)
        # What forward reads: one reference to both banks, swapped whole when they grow, so a
        # pass running in another thread never pairs an old A with a new B.
        self._banks = (self.lora_A, self.lora_B)

    @property
    def in_features(self) -> int:
        return self.base.in_features

    @property
    def out_features(self) -> int:
        return self.base.out_features

    @property
    def weight(self) -> torch.Tensor:  # modules that read `.weight.dtype` keep working
        return self.base.weight

    @property
    def bias(self) -> torch.Tensor | None:
        return self.base.bias

    def _grow(self, capacity: int, rank: int) -> None:
        cap0, r0 = self.lora_A.shape[0], self.lora_A.shape[1]
        if capacity <= cap0 and rank <= r0:
            return
        capacity, rank = max(capacity, cap0), max(rank, r0)
        a = self.lora_A.new_zeros(capacity, rank, self.in_features)
        b = self.lora_B.new_zeros(capacity, self.out_features, rank)
        a[:cap0, :r0] = self.lora_A
        b[:cap0, :, :r0] = self.lora_B
        self.lora_A, self.lora_B = a, b
        self._banks = (a, b)

    def set_slot(self, slot: int, a: torch.Tensor, b: torch.Tensor, scale: float, capacity: int) -> None:
        """Write one adapter's factors (A [r, d_in], B [d_out, r]) into `slot`."""
        r = a.shape[0]
        self._grow(capacity, r)
        dtype = self.lora_A.dtype
        self.lora_A[slot].zero_()
        self.lora_B[slot].zero_()
        self.lora_A[slot, :r] = a.to(dtype)
        self.lora_B[slot, :, :r] = (b.to(torch.float32) * scale).to(dtype)

    def clear_slot(self, slot: int) -> None:
        if slot < self.lora_A.shape[0]:
            self.lora_A[slot].zero_()
            self.lora_B[slot].zero_()

    def merges_for(self, tokens: int) -> bool:
        """Whether a one-adapter batch of `tokens` positions merges the adapter into the weight.

        Merging costs d_in * d_out * r multiply-adds whatever the batch; the two factors' pass
        costs tokens * r * (d_in + d_out), and reads x and writes out once more besides. So long
        batches merge (a 768-wide projection over 4,096 tokens took 9% longer than the base
        alone unmerged and 0.2% longer merged, on this CPU) and short ones, such as one
        request, do not.
        """
        return tokens * (self.in_features + self.out_features) >= self.in_features * self.out_features

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        rows = self.router.rows
        bank_a, bank_b = self._banks
        capacity = bank_a.shape[0]
        single = self.router.single
        if (rows is not None and single is not None and 0 < single < capacity
                and self.merges_for(x.numel() // x.shape[-1])):
            # W + B A for this pass only, then the one GEMM a merged model runs. The merged
            # weight is a fresh tensor kept in this thread's route: other passes never see it.
            weight = self.router.merged.get(self)
            if weight is None:
                weight = torch.addmm(self.base.weight, bank_b[single].to(self.base.weight.dtype),
                                     bank_a[single].to(self.base.weight.dtype))
                self.router.merged[self] = weight
            return nn.functional.linear(x, weight, self.base.bias)
        out = self.base(x)
        if rows is None or capacity == 0:
            return out
        if single is not None:
            if single == 0 or single >= capacity:
                return out
            # One BLAS call adds the second factor straight into the base output: no delta
            # tensor, no separate add pass.
            flat = out.view(-1, out.shape[-1])  # [N, d_out]
            h = x.reshape(-1, x.shape[-1]) @ bank_a[single].to(x.dtype).T  # [N, r]
            # in-place ops are outside autocast: under bf16 every operand takes out's dtype
            flat.addmm_(h.to(out.dtype), bank_b[single].to(out.dtype).T)
            return out
        rows = rows.clamp(max=capacity - 1) * (rows < capacity)  # slots this layer never saw: 0
        # index_select copies whole slots; advanced indexing (bank[rows]) takes a generic
        # kernel that was ~10x slower here and showed up in the batch profile
        a = bank_a.index_select(0, rows)  # [B, r, d_in]
        b = bank_b.index_select(0, rows)  # [B, d_out, r]
        x3 = x if x.dim() == 3 else x.unsqueeze(1)  # [B, T, d_in]
        out3 = out if out.dim() == 3 else out.unsqueeze(1)  # [B, T, d_out], a view of out
        # A @ x^T gives [B, r, T]: the product's wide side is the sequence, not the rank. BLAS
        # runs that shape several times faster than x @ A^T's [B, T, r] (r is 8 or 16 wide),
        # which made the mixed path cost about 4% of a long-row batch instead of about 1%.
        h = torch.bmm(a.to(x.dtype), x3.transpose(1, 2))  # [B, r, T]
        out3.baddbmm_(h.to(out.dtype).transpose(1, 2), b.to(out.dtype).transpose(1, 2))
        return out


def wrap(model: nn.Module, path: str, router: Router) -> LoraBankLinear:
    """Replace the `nn.Linear` at `path` with a bank around it (or return the existing bank)."""
    module = model.get_submodule(path)
    if isinstance(module, LoraBankLinear):
        return module
    if not isinstance(module, nn.Linear):
        raise TypeError(f"{path} is a {type(module).__name__}, not a linear layer")
    parent_path, _, child = path.rpartition(".")
    parent = model.get_submodule(parent_path) if parent_path else model
    bank = LoraBankLinear(module, router)
    setattr(parent, child, bank)
    return bank
