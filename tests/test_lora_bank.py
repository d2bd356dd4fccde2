"""The LoRA bank's three ways of adding an adapter give the sum LoRA defines."""

from __future__ import annotations

import torch
from torch import nn

from adapters_kit.engine.lora_bank import LoraBankLinear, Router, rank_bucket

D_IN, D_OUT = 24, 40
PLACES = {0: None, 1: (8, 0), 2: (4, 0)}  # slot -> its place in the banks (0: no adapter)


def places(slots: list[int]) -> list:
    return [PLACES[s] for s in slots]


def make_bank() -> tuple[nn.Linear, LoraBankLinear, Router, dict]:
    torch.manual_seed(0)
    base = nn.Linear(D_IN, D_OUT)
    router = Router()
    bank = LoraBankLinear(base, router)
    factors = {}
    for slot, rank, scale in ((1, 8, 2.0), (2, 3, 0.5)):  # ranks differ: slot 2 is padded to 4
        a, b = 0.1 * torch.randn(rank, D_IN), 0.1 * torch.randn(D_OUT, rank)
        assert PLACES[slot][0] == rank_bucket(rank)
        bank.set_slot(PLACES[slot], a, b, scale, rows=4)
        factors[slot] = (a, b, scale)
    return base, bank, router, factors


def lora(base: nn.Linear, factors: dict, slot: int, x: torch.Tensor) -> torch.Tensor:
    """y = W x + b + scale * B A x, written out plainly."""
    if slot == 0:
        return base(x)
    a, b, scale = factors[slot]
    return base(x) + scale * (x @ a.T) @ b.T


@torch.inference_mode()
def test_single_merged_single_unmerged_and_mixed_paths_agree_with_the_formula():
    base, bank, router, factors = make_bank()
    short, long = 1, 64  # positions per row: below and above the merge threshold
    assert not bank.merges_for(2 * short) and bank.merges_for(2 * long)
    for tokens in (short, long):
        x = torch.randn(3, tokens, D_IN)
        for slots in ([1, 1], [2, 2], [0, 0], [1, 2], [2, 0], [1, 2, 1], [0, 2, 2]):
            with router.route(places(slots)):
                got = bank(x[: len(slots)])
            assert got.shape[0] == len(slots)
            for row, slot in enumerate(slots):
                torch.testing.assert_close(got[row], lora(base, factors, slot, x[row]),
                                           rtol=0, atol=1e-5)
    with router.route(places([1, 1])):  # 2-D inputs [tokens, d_in] too
        x2 = torch.randn(long, D_IN)
        torch.testing.assert_close(bank(x2), lora(base, factors, 1, x2), rtol=0, atol=1e-5)


@torch.inference_mode()
def test_a_merged_pass_leaves_the_base_weight_and_the_banks_untouched():
    base, bank, router, _ = make_bank()
    weight, banks = base.weight.clone(), [t.clone() for stack in bank._buckets.values() for t in stack]
    with router.route(places([1, 1])):
        bank(torch.randn(2, 64, D_IN))
    assert torch.equal(base.weight, weight)
    assert all(torch.equal(t, u) for t, u in zip(
        [t for stack in bank._buckets.values() for t in stack], banks))
    assert router.merged is None  # the pass's merged weights end with the pass
    with router.route(places([0, 0])):  # no adapter afterwards: the plain base again
        x = torch.randn(2, 64, D_IN)
        torch.testing.assert_close(bank(x), base(x), rtol=0, atol=0)


@torch.inference_mode()
def test_a_layer_run_at_every_depth_merges_once_per_pass():
    """ALBERT's shared layer: each depth reuses the pass's merge and still gets the LoRA sum."""
    base, bank, router, factors = make_bank()
    x = torch.randn(2, 64, D_IN)
    with router.route(places([1, 1])):
        for _ in range(3):
            torch.testing.assert_close(bank(x), lora(base, factors, 1, x), rtol=0, atol=1e-5)
            x = torch.tanh(bank(x))[..., :D_IN]  # the next depth's input differs
        assert list(router.merged) == [bank]
    with router.route(places([2, 2])):  # the next pass merges its own adapter
        torch.testing.assert_close(bank(x), lora(base, factors, 2, x), rtol=0, atol=1e-5)


@torch.inference_mode()
def test_many_adapters_gather_their_rows_and_layers_they_miss_add_nothing():
    """More adapters in a span than Router.RUNS_MAX take the gather path; a row whose bucket
    row this layer never held (an adapter targeting other layers) gets the base alone."""
    torch.manual_seed(1)
    base, router = nn.Linear(D_IN, D_OUT), Router()
    bank = LoraBankLinear(base, router)
    factors = {}
    n = Router.RUNS_MAX + 2
    for row in range(n):
        a, b = 0.1 * torch.randn(8, D_IN), 0.1 * torch.randn(D_OUT, 8)
        bank.set_slot((8, row), a, b, 1.5, rows=n)
        factors[row] = (a, b, 1.5)
    for rows in ([3, 0, 5, 1, 4, 2, 5], [3, 0, 5, 1, 4, 2, n]):  # unsorted; row n: not here
        x = torch.randn(len(rows), 5, D_IN)
        with router.route([(8, r) for r in rows]):
            assert router.groups[0].rows is not None  # more adapters than runs one by one
            got = bank(x)
        for i, r in enumerate(rows):
            want = base(x[i])
            if r < n:
                a, b, scale = factors[r]
                want = want + scale * (x[i] @ a.T) @ b.T
            torch.testing.assert_close(got[i], want, rtol=0, atol=1e-5)
