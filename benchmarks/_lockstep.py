"""Time two forward passes in lock-step, block by block, so the machine's drift cancels.

On this shared 2-core VM one batch's time moves by 10-15% from run to run, and the noise is
correlated over a few seconds. Two whole batches timed one after the other (1-7 s each) land
in different weather; two layers timed one after the other (10-600 ms) mostly do not.
`lockstep` runs two unmodified forward calls, each in its own greenlet on the calling thread,
and switches between them at every boundary module (`blocks`: each transformer block;
`linears`: each linear layer inside them): a forward pre-hook on each hands control back. The
segments run in the order

    A0 B0 B1 A1 A2 B2 B3 A3 ...     (segment 0 ends where the first boundary starts,
                                     segment i runs from boundary i-1's start to boundary i's)

so adjacent segments of the two calls pair up ABBA-fashion. Each call's time is the sum of its
own segments, which cover all its work (the first segment includes everything before the first
boundary, the last everything after the last one).

Why greenlets, not threads: everything runs on one OS thread, so both calls share one OpenMP
team. Two Python threads would each own a team, and the idle team's worker, woken at each
switch, would add a fixed wake-up cost to both sides and pull the ratio towards 1.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import torch
from greenlet import greenlet
from torch import nn

from adapters_kit.engine.lora_bank import LoraBankLinear

BLOCK_TYPES = ("TransformerBlock", "AlbertLayerGroup")  # DistilBERT's layers; ALBERT's shared group


def blocks(model: nn.Module) -> list[nn.Module]:
    """The transformer blocks of a DistilBERT or ALBERT model, in order (ALBERT: its one
    shared group, which runs at every depth)."""
    found = [m for m in model.modules() if type(m).__name__ in BLOCK_TYPES]
    if not found:
        raise ValueError(f"no {'/'.join(BLOCK_TYPES)} module in {type(model).__name__}")
    return found


def linears(model: nn.Module) -> list[nn.Module]:
    """Every linear layer inside the transformer blocks, an adapter bank counting as one (its
    LoRA work then falls in its own segment): finer segments than `blocks`."""
    found, inside_banks = [], set()
    for block in blocks(model):
        for m in block.modules():  # pre-order: a bank comes before the linear it wraps
            if isinstance(m, LoraBankLinear):
                found.append(m)
                inside_banks.add(id(m.base))
            elif type(m) is nn.Linear and id(m) not in inside_banks:
                found.append(m)
    return found


def lockstep(first: Callable[[], object], first_model: nn.Module,
             second: Callable[[], object], second_model: nn.Module,
             at: Callable[[nn.Module], list[nn.Module]] = blocks) -> tuple[list[float], list[float]]:
    """Seconds of each segment of `first()` and of `second()`, run interleaved (first starts).

    The two models must be distinct objects with the same number of boundary calls per pass,
    and must not share thread-local state: both passes run on this thread.
    """
    driver = greenlet.getcurrent()
    spent: dict[str, list[float]] = {"a": [], "b": []}
    started = {}

    def boundary(side: str) -> None:
        spent[side].append(time.perf_counter() - started[side])
        driver.switch()  # the driver resumes whichever side runs next
        started[side] = time.perf_counter()

    def body(side: str, fn: Callable[[], object]) -> Callable[[], None]:
        def run() -> None:
            started[side] = time.perf_counter()
            fn()
            spent[side].append(time.perf_counter() - started[side])
        return run

    handles = []
    for side, model in (("a", first_model), ("b", second_model)):
        for block in at(model):
            handles.append(block.register_forward_pre_hook(lambda *_, s=side: boundary(s)))
    lets = {"a": greenlet(body("a", first)), "b": greenlet(body("b", second))}
    try:
        # inference mode around both: each call's own `with inference_mode()` then nests
        # inside it, and leaving one cannot switch the mode off under the other
        with torch.inference_mode():
            lets["a"].switch()  # A0
            side = "b"
            while not (lets["a"].dead and lets["b"].dead):
                for _ in range(2):  # B0 B1, then A1 A2, then B2 B3, ...
                    if not lets[side].dead:
                        lets[side].switch()
                side = "a" if side == "b" else "b"
    finally:
        for h in handles:
            h.remove()
    if len(spent["a"]) != len(spent["b"]):
        raise RuntimeError(f"the two passes ran {len(spent['a'])} and {len(spent['b'])} segments: "
                           "compare models with the same number of blocks")
    return spent["a"], spent["b"]
