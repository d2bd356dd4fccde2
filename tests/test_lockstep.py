"""The benchmark's lock-step timer: it interleaves two real forward passes in ABBA order,
leaves their results untouched, and times every segment of each."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch
from transformers import DistilBertConfig, DistilBertForSequenceClassification

from adapters_kit.engine.lora_bank import LoraBankLinear, Router
from adapters_kit.engine.wrapping import wrap

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))
from _lockstep import blocks, linears, lockstep  # noqa: E402


def tiny(layers: int, seed: int) -> DistilBertForSequenceClassification:
    torch.manual_seed(seed)
    cfg = DistilBertConfig(vocab_size=100, dim=32, hidden_dim=64, n_layers=layers, n_heads=2,
                           max_position_embeddings=32)
    return DistilBertForSequenceClassification(cfg).eval()


def expected_order(n_segments: int) -> list[tuple[str, int]]:
    """A0 B0 B1 A1 A2 B2 B3 A3 ...: after A's first segment the sides alternate in pairs."""
    order = [("a", 0)]
    side, done = "b", {"a": 1, "b": 0}
    while done["a"] < n_segments or done["b"] < n_segments:
        for _ in range(2):
            if done[side] < n_segments:
                order.append((side, done[side]))
                done[side] += 1
        side = "a" if side == "b" else "b"
    return order


def test_two_passes_interleave_abba_and_keep_their_outputs():
    a_model, b_model = tiny(3, 0), tiny(3, 1)
    ids = torch.randint(5, 100, (2, 7))
    with torch.inference_mode():
        alone = a_model(input_ids=ids).logits, b_model(input_ids=ids).logits
    log, out = [], {}
    # a post-hook on block i runs in segment i + 1; the first segment ends at block 0's start
    for side, model in (("a", a_model), ("b", b_model)):
        model.distilbert.embeddings.register_forward_hook(lambda *_, s=side: log.append((s, 0)))
        for i, block in enumerate(blocks(model)):
            block.register_forward_hook(lambda *_, s=side, i=i: log.append((s, i + 1)))

    def run(side, model):
        def fn():
            with torch.inference_mode():  # nested, as the benchmark's own calls are
                out[side] = model(input_ids=ids).logits
        return fn

    seg_a, seg_b = lockstep(run("a", a_model), a_model, run("b", b_model), b_model)
    assert len(seg_a) == len(seg_b) == 4  # before block 0, then one per block
    assert all(t > 0 for t in seg_a + seg_b)
    assert log == expected_order(4)
    assert torch.equal(out["a"], alone[0]) and torch.equal(out["b"], alone[1])
    assert torch.is_inference_mode_enabled() is False  # the mode is restored afterwards


def test_passes_with_different_block_counts_are_refused():
    a_model, b_model = tiny(2, 0), tiny(3, 0)
    ids = torch.randint(5, 100, (1, 5))
    with pytest.raises(RuntimeError, match="3 and 4 segments"):
        lockstep(lambda: a_model(input_ids=ids), a_model, lambda: b_model(input_ids=ids), b_model)
    # the hooks are gone: a plain pass afterwards runs straight through
    with torch.inference_mode():
        a_model(input_ids=ids)


def test_an_adapter_bank_is_one_segment_boundary_not_two():
    plain, banked = tiny(2, 0), tiny(2, 0)
    router = Router()
    for i in range(2):
        for name in ("q_lin", "v_lin"):
            wrap(banked, f"distilbert.transformer.layer.{i}.attention.{name}", router)
    found = linears(banked)
    assert len(found) == len(linears(plain)) == 2 * 6
    assert sum(isinstance(m, LoraBankLinear) for m in found) == 4
    assert not any(m is bank.base for bank in found if isinstance(bank, LoraBankLinear) for m in found)
