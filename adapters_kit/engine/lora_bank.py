"""A linear layer that holds every resident LoRA adapter in stacked rows, one stack per rank.

Each adapted `nn.Linear` of the frozen base is wrapped once. Adapters live in rows of banks
kept per rank bucket (`rank_bucket`: the next power of two), so an r=64 adapter pads only the
other r=33..64 ones, never the r=8 ones. A batch carries one place, (bucket, row), per row:

    y = base(x) + (x @ A[place]^T) @ B[place]^T        (B is stored pre-multiplied by the scale)

The engine sorts a batch's rows by place, so each adapter's rows are contiguous: with few
adapters in a batch each runs as two plain matmuls on a view of its rows (`Router.RUNS_MAX`);
with many, each bucket's rows gather their factors and run two batched matmuls. A batch whose
rows all use one adapter and that is long enough merges that adapter into the weight for this
pass instead (`LoraBankLinear.merges_for`): the same sum, one GEMM.

Switching tasks changes an index; loading an adapter writes one row.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator
from dataclasses import dataclass

import torch
from torch import nn

Place = tuple[int, int]
"""Where one adapter's factors sit: (rank bucket, row in that bucket's stack)."""


def rank_bucket(rank: int) -> int:
    """The bucket of a rank-`rank` adapter: the next power of two (padding at most 2x)."""
    return 1 << max(0, rank - 1).bit_length()


@dataclass(frozen=True)
class Group:
    """A contiguous span of batch rows whose adapters share one rank bucket."""

    bucket: int
    start: int
    end: int
    runs: tuple[tuple[int, int, int], ...]  # (row in the bucket, start, end): one adapter's rows
    rows: torch.Tensor | None  # [end - start] bucket rows for the gather path; None: run by run
    top: int  # the largest bucket row in the span


class Router:
    """Which place each row of the current batch uses; one value per thread."""

    RUNS_MAX = 4
    """Up to this many adapters in a span run one by one (two matmuls each on a view of their
    rows); more gather their factors per row and run two batched matmuls (four ops whatever
    the count). Measured on the 384-wide embedded backbone: see the README's serving section."""

    def __init__(self) -> None:
        self._local = threading.local()

    @property
    def groups(self) -> tuple[Group, ...] | None:
        return getattr(self._local, "groups", None)

    @property
    def single(self) -> Place | None:
        return getattr(self._local, "single", None)

    @property
    def merged(self) -> dict:
        """Weights merged for the current pass, per bank: ALBERT's shared layer runs at every
        depth, and merges its adapter once per pass, not once per depth."""
        return getattr(self._local, "merged", None)

    @staticmethod
    def plan(places: list[Place | None], device: torch.device | str | None = None
             ) -> tuple[tuple[Group, ...], Place | None]:
        """The spans of `places` (None: a row without adapter) and the one place all rows
        share, if they do."""
        groups: list[Group] = []
        i, n = 0, len(places)
        while i < n:
            if places[i] is None:
                i += 1
                continue
            bucket, start = places[i][0], i
            runs: list[tuple[int, int, int]] = []
            while i < n and places[i] is not None and places[i][0] == bucket:
                row, s = places[i][1], i
                while i < n and places[i] == (bucket, row):
                    i += 1
                runs.append((row, s - start, i - start))
            rows = None
            if len(runs) > Router.RUNS_MAX:
                rows = torch.tensor([p[1] for p in places[start:i]], dtype=torch.long,  # [span]
                                    device=device)
            groups.append(Group(bucket, start, i, tuple(runs), rows, max(r for r, _, _ in runs)))
        single = places[0] if len(groups) == 1 and len(groups[0].runs) == 1 \
            and groups[0].end - groups[0].start == n else None
        return tuple(groups), single

    @contextlib.contextmanager
    def route(self, places: list[Place | None], device: torch.device | str | None = None
              ) -> Iterator[None]:
        """Route row i to `places[i]` for the duration of a forward pass; rows of one adapter
        next to each other run fastest."""
        self._local.groups, self._local.single = self.plan(places, device)
        self._local.merged = {}
        try:
            yield
        finally:
            self._local.groups = None
            self._local.single = None
            self._local.merged = None


class LoraBankLinear(nn.Module):
    """A frozen `nn.Linear` plus a stack of LoRA rows per rank bucket."""

    def __init__(self, base: nn.Linear, router: Router) -> None:
        super().__init__()
        self.base = base
        self.router = router
        # bucket -> (A [rows, bucket, d_in], B [rows, d_out, bucket]); B stored as scale * B.
        # Replaced whole, never mutated in place, so a pass running in another thread never
        # pairs an old A with a new B or sees a half-grown stack.
        self._buckets: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}

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

    def _apply(self, fn, recurse: bool = True):
        # the stacks are plain tensors, not parameters: `.to(device)` moves them here
        super()._apply(fn, recurse)
        self._buckets = {k: (fn(a), fn(b)) for k, (a, b) in self._buckets.items()}
        return self

    def rows(self, bucket: int) -> int:
        """Rows allocated in `bucket` (0 if this layer holds none)."""
        stack = self._buckets.get(bucket)
        return 0 if stack is None else stack[0].shape[0]

    def nbytes(self) -> int:
        """Bytes this layer's stacks hold, every allocated row counted."""
        return sum(a.nbytes + b.nbytes for a, b in self._buckets.values())

    def resize(self, bucket: int, rows: int) -> None:
        """Give `bucket` exactly `rows` rows (new ones zero, rows past the end dropped)."""
        old = self._buckets.get(bucket)
        if old is not None and old[0].shape[0] == rows:
            return
        buckets = dict(self._buckets)
        if rows == 0:
            buckets.pop(bucket, None)
        else:
            w = self.base.weight
            a = torch.zeros(rows, bucket, self.in_features, device=w.device)
            b = torch.zeros(rows, self.out_features, bucket, device=w.device)
            if old is not None:
                keep = min(rows, old[0].shape[0])
                a[:keep], b[:keep] = old[0][:keep], old[1][:keep]
            buckets[bucket] = (a, b)
        self._buckets = buckets

    def set_slot(self, place: Place, a: torch.Tensor, b: torch.Tensor, scale: float,
                 rows: int) -> None:
        """Write one adapter's factors (A [r, d_in], B [d_out, r]) at `place`; its bucket is
        first grown to `rows` rows if it holds fewer."""
        bucket, row = place
        r = a.shape[0]
        if r > bucket:
            raise ValueError(f"a rank-{r} adapter does not fit bucket {bucket}; use "
                             f"rank_bucket({r}) = {rank_bucket(r)}")
        if self.rows(bucket) < rows:
            self.resize(bucket, rows)
        bank_a, bank_b = self._buckets[bucket]
        bank_a[row].zero_()
        bank_b[row].zero_()
        bank_a[row, :r] = a.to(device=bank_a.device, dtype=bank_a.dtype)  # from the files' CPU copy
        bank_b[row, :, :r] = (b.to(device=bank_b.device, dtype=torch.float32) * scale).to(bank_b.dtype)

    def clear_slot(self, place: Place) -> None:
        bucket, row = place
        stack = self._buckets.get(bucket)
        if stack is not None and row < stack[0].shape[0]:
            stack[0][row].zero_()
            stack[1][row].zero_()

    def move(self, bucket: int, src: int, dst: int) -> None:
        """Copy row `src` of `bucket` to row `dst` and clear `src` (compaction)."""
        stack = self._buckets.get(bucket)
        if stack is None or src >= stack[0].shape[0]:
            return
        for t in stack:
            t[dst] = t[src]
            t[src].zero_()

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
        groups = self.router.groups
        if not groups or not self._buckets:
            return self.base(x)
        buckets = self._buckets
        single = self.router.single
        if single is not None:
            stack = buckets.get(single[0])
            if stack is None or single[1] >= stack[0].shape[0]:
                return self.base(x)  # no adapter of this batch targets this layer
            if self.merges_for(x.numel() // x.shape[-1]):
                # W + B A for this pass only, then the one GEMM a merged model runs. The merged
                # weight is a fresh tensor kept in this thread's route: other passes never see it.
                weight = self.router.merged.get(self)
                if weight is None:
                    dtype = self.base.weight.dtype
                    weight = torch.addmm(self.base.weight, stack[1][single[1]].to(dtype),
                                         stack[0][single[1]].to(dtype))
                    self.router.merged[self] = weight
                return nn.functional.linear(x, weight, self.base.bias)
        out = self.base(x)
        x3 = x if x.dim() == 3 else x.unsqueeze(1)  # [B, T, d_in]
        out3 = out if out.dim() == 3 else out.unsqueeze(1)  # [B, T, d_out], a view of out
        for g in groups:
            stack = buckets.get(g.bucket)
            if stack is None:
                continue  # no adapter of this bucket targets this layer
            bank_a, bank_b = stack
            xs, outs = x3[g.start : g.end], out3[g.start : g.end]
            if g.rows is not None and g.top < bank_a.shape[0]:
                # index_select copies whole rows; advanced indexing (bank[rows]) takes a generic
                # kernel that was ~10x slower here and showed up in the batch profile
                a = bank_a.index_select(0, g.rows)  # [span, r, d_in]
                b = bank_b.index_select(0, g.rows)  # [span, d_out, r]
                # A @ x^T gives [span, r, T]: the product's wide side is the sequence, not the
                # rank. BLAS runs that shape several times faster than x @ A^T's [span, T, r]
                # (r is 8 or 16 wide), which made the mixed path cost about 4% of a long-row
                # batch instead of about 1%.
                h = torch.bmm(a.to(x.dtype), xs.transpose(1, 2))  # [span, r, T]
                outs.baddbmm_(h.to(out.dtype).transpose(1, 2), b.to(out.dtype).transpose(1, 2))
                continue
            for row, s, e in g.runs:
                if row >= bank_a.shape[0]:
                    continue  # an adapter that does not target this layer
                # One BLAS call adds the second factor straight into the base output: no delta
                # tensor, no separate add pass. In-place ops are outside autocast: under bf16
                # every operand takes out's dtype.
                flat = outs[s:e].view(-1, out.shape[-1])  # [n, d_out], a view of out
                h = xs[s:e].reshape(-1, x.shape[-1]) @ bank_a[row].to(x.dtype).T  # [n, r]
                flat.addmm_(h.to(out.dtype), bank_b[row].to(out.dtype).T)
        return out
