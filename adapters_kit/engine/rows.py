"""The banks' rows as the slot table hands them out: writing one version's factors, clearing
them, counting their bytes and compacting the holes (`MultiTaskModel.load`, `unload`, `trim`).

`banks` is the model's module path -> `LoraBankLinear` of every linear some adapter targets;
the slot table says which rows, this module moves the tensors.
"""

from __future__ import annotations

from torch import nn

from .admit import Pairs
from .lora_bank import LoraBankLinear, Place, Router, rank_bucket
from .slots import SlotTable
from .wrapping import wrap

Banks = dict[str, LoraBankLinear]


def write(banks: Banks, model: nn.Module, router: Router, place: Place, pairs: Pairs,
          rows: int) -> None:
    """Write one version's factors at `place`, wrapping each linear it targets on first use
    and growing its bucket to `rows` rows."""
    for module in pairs:
        if module not in banks:
            banks[module] = wrap(model, module, router)
    for module, (a, b, scale) in pairs.items():
        banks[module].set_slot(place, a, b, scale, rows)


def clear(banks: Banks, place: Place, bucket_empty: bool) -> None:
    """Zero a freed version's rows; `bucket_empty`: no version holds its bucket now, drop it."""
    for bank in banks.values():
        bank.clear_slot(place)
        if bucket_empty:
            bank.resize(place[0], 0)


def slot_bytes(banks: Banks, rank: int) -> int:
    """Bank memory one resident adapter of rank `rank` takes (every bank in use, its rank
    padded to its bucket)."""
    bucket = rank_bucket(rank)
    return sum(bucket * (bank.in_features + bank.out_features) * 4 for bank in banks.values())


def nbytes(banks: Banks, slots: SlotTable, trimmed: bool = False) -> int:
    """Bytes every allocated row holds (padding and free rows included); `trimmed`: the rows
    in use only, what `compact` would leave."""
    if not trimmed:
        return sum(b.nbytes() for b in banks.values())
    total = 0
    for bucket in slots.buckets():
        held = slots.held(bucket)
        total += sum(min(held, bank.rows(bucket)) * bucket * (bank.in_features + bank.out_features)
                     * 4 for bank in banks.values())
    return total


def compact(banks: Banks, slots: SlotTable) -> None:
    """Move unleased versions down into the holes and shrink each bucket to the rows in use."""
    for bucket in slots.buckets():
        moves, rows = slots.compaction(bucket)
        if not moves and rows == slots.rows(bucket):
            continue
        for bank in banks.values():
            for _, src, dst in moves:
                bank.move(bucket, src, dst)
            if bank.rows(bucket) > rows:
                bank.resize(bucket, rows)
        slots.apply(bucket, moves, rows)
