"""Which adapter versions are resident and who is using them: `ResidentTask` (one version: its
slot, its place in the banks, its head, its leases) and `SlotTable` (slot ids, bank rows, leases).

Bookkeeping only: the model writes and clears the banks, this module says which rows.
"""

from __future__ import annotations

import heapq
import threading
from dataclasses import dataclass
from pathlib import Path

import torch

from ..tasks import TaskSpec
from ..tasks.kinds import Kind
from .lora_bank import Place


@dataclass
class ResidentTask:
    """A task whose adapter occupies a slot."""

    name: str
    slot: int
    kind: str
    labels: list[str]
    pair: bool
    max_length: int
    head_weight: torch.Tensor  # [n_outputs, hidden]
    head_bias: torch.Tensor | None  # [n_outputs]
    dense: tuple[torch.Tensor, torch.Tensor] | None  # a head dense saved whole: [h, h], [h]
    path: Path
    nbytes: int
    digest: str
    spec: TaskSpec
    impl: Kind
    place: Place = (0, -1)  # where its factors sit in the banks: (rank bucket, row)
    users: int = 0  # forward passes using this slot right now
    retired: bool = False  # unloaded or replaced: the slot is freed when `users` drops to 0

    @property
    def head_bytes(self) -> int:
        """Bytes of its head held in memory (weight, bias, a dense saved whole)."""
        parts = [self.head_weight, self.head_bias, *(self.dense or ())]
        return sum(t.nbytes for t in parts if t is not None)


class SlotTable:
    """Slot ids, bank rows and leases: which adapter versions are resident, where their
    factors sit, and how many passes use each one.

    Ints under one lock, no tensors: the model writes and clears the banks, this table says
    which rows. Ids are what the public API counts (`capacity`, `slot_usage`); rows are per
    rank bucket, allocated as they fill (a quarter more at a time) and given back by `trim`.
    """

    def __init__(self, capacity: int) -> None:
        self.lock = threading.RLock()
        self.capacity = capacity
        self._free_ids = list(range(capacity - 1, 0, -1))  # slot 0 means "no adapter"
        self._rows: dict[int, int] = {}  # bucket -> rows allocated
        self._free_rows: dict[int, list[int]] = {}  # bucket -> heap of allocated rows not held
        self._holders: dict[int, dict[int, ResidentTask]] = {}  # bucket -> row -> its version

    def used(self) -> int:
        return self.capacity - 1 - len(self._free_ids)

    def rows(self, bucket: int) -> int:
        return self._rows.get(bucket, 0)

    def held(self, bucket: int) -> int:
        return len(self._holders.get(bucket, ()))

    def buckets(self) -> list[int]:
        return sorted(self._rows)

    def take(self, task: ResidentTask, bucket: int) -> int:
        """Give `task` a slot id and the lowest free row of `bucket`; returns the rows the
        bucket must have for it."""
        if not self._free_ids:
            old = self.capacity
            self.capacity *= 2
            self._free_ids = list(range(self.capacity - 1, old - 1, -1))
        task.slot = self._free_ids.pop()
        free = self._free_rows.setdefault(bucket, [])
        if not free:
            n = self._rows.get(bucket, 0)
            grown = n + max(1, n // 4)
            for r in range(n, grown):
                heapq.heappush(free, r)
            self._rows[bucket] = grown
        row = heapq.heappop(free)
        task.place = (bucket, row)
        self._holders.setdefault(bucket, {})[row] = task
        return self._rows[bucket]

    def free(self, task: ResidentTask) -> int:
        """Give back `task`'s id and row; returns the rows its bucket keeps (0: none left)."""
        bucket, row = task.place
        self._free_ids.append(task.slot)
        holders = self._holders[bucket]
        del holders[row]
        if not holders:  # an empty bucket costs nothing to drop
            del self._holders[bucket], self._rows[bucket], self._free_rows[bucket]
            return 0
        heapq.heappush(self._free_rows[bucket], row)
        return self._rows[bucket]

    def versions(self) -> list[ResidentTask]:
        """Every adapter version holding a row, retired ones still in use included."""
        return [t for holders in self._holders.values() for t in holders.values()]

    def acquire(self, task: ResidentTask) -> None:
        task.users += 1

    def release(self, task: ResidentTask) -> bool:
        """End one lease; True when that freed a retired version (the caller frees it)."""
        task.users -= 1
        return task.retired and task.users == 0

    def retire(self, task: ResidentTask) -> bool:
        """Mark a version unloaded or replaced; True when no pass uses it (free it now)."""
        task.retired = True
        return task.users == 0

    def compaction(self, bucket: int) -> tuple[list[tuple[ResidentTask, int, int]], int]:
        """Moves (version, from row, to row) that fill `bucket`'s holes with its highest
        unleased rows, and the rows it needs afterwards. Leased versions never move: a pass
        in flight has their rows in its route."""
        holders = self._holders.get(bucket, {})
        holes = sorted(r for r in range(len(holders)) if r not in holders)
        movers = sorted((r for r in holders if r >= len(holders) and holders[r].users == 0),
                        reverse=True)
        moves = [(holders[src], src, dst) for src, dst in zip(movers, holes)]
        moved = {src for _, src, _ in moves}
        top = max([dst for _, _, dst in moves] + [r for r in holders if r not in moved],
                  default=-1)
        return moves, top + 1

    def apply(self, bucket: int, moves: list[tuple[ResidentTask, int, int]], rows: int) -> None:
        """Record a compaction of `bucket` the banks have carried out."""
        holders = self._holders[bucket]
        for task, src, dst in moves:
            del holders[src]
            holders[dst] = task
            task.place = (bucket, dst)
        self._rows[bucket] = rows
        self._free_rows[bucket] = [r for r in range(rows) if r not in holders]
        heapq.heapify(self._free_rows[bucket])
