"""What a comparison measures on a trained adapter, through the serving engine.

Latency is one request of one input, as a caller of `MultiTaskModel.predict` sees it (tokenise,
forward, decode); throughput is batches of 32 consecutive dev inputs, so at the task's real mix
of lengths. Bytes are counted, not estimated: the base's tensors as held in memory (after any
quantization), the adapter's files and the base's weights files on disk.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import torch

from ..adapters.store import CONFIG, WEIGHTS

LATENCY_REQUESTS = 200
LATENCY_SECONDS = 5.0
THROUGHPUT_BATCH = 32
THROUGHPUT_SECONDS = 4.0


def dev_inputs(split) -> list | None:
    """The dev split's inputs as a caller would send them (a text, or a pair of texts), or
    None where the split holds no plain texts (then the engine is timed on its token rows)."""
    texts = getattr(split, "texts", None)
    if not isinstance(texts, list) or not texts or not all(isinstance(c, list) for c in texts):
        return None
    return list(texts[0]) if len(texts) == 1 else [tuple(parts) for parts in zip(*texts)]


class Requests:
    """One task's dev inputs sent to a loaded engine: `one(i)` a single input, `batch(i, n)` n
    of them from position i (wrapping round)."""

    def __init__(self, model, name: str, inputs: list | None, rows: list[list[int]]) -> None:
        self.model, self.name, self.inputs, self.rows = model, name, inputs, rows
        self.n = len(inputs) if inputs is not None else len(rows)

    def _take(self, start: int, count: int) -> list:
        source = self.inputs if self.inputs is not None else self.rows
        return [source[(start + k) % self.n] for k in range(count)]

    def send(self, start: int, count: int) -> None:
        items = self._take(start, count)
        if self.inputs is not None:
            self.model.predict(self.name, items)
        else:
            self.model.run_ids(self.name, items, count)


def latency_ms(requests: Requests, max_requests: int = LATENCY_REQUESTS,
               max_seconds: float = LATENCY_SECONDS) -> tuple[float, float, int]:
    """(p50, p99, requests timed) of one-input requests over successive dev inputs."""
    for i in range(3):  # warm-up: first calls build caches and wake the thread pool
        requests.send(i, 1)
    times: list[float] = []
    started = time.perf_counter()
    while len(times) < max_requests and (len(times) < 20 or time.perf_counter() - started < max_seconds):
        t = time.perf_counter()
        requests.send(len(times), 1)
        times.append((time.perf_counter() - t) * 1000)
    p50, p99 = np.percentile(times, [50, 99])
    return float(p50), float(p99), len(times)


def rows_per_second(requests: Requests, batch: int = THROUGHPUT_BATCH,
                    max_seconds: float = THROUGHPUT_SECONDS) -> float:
    """Rows per second answered in batches of `batch` consecutive dev inputs."""
    requests.send(0, batch)  # warm-up
    rows, start, spent = 0, 0, 0.0
    while rows < 3 * batch or (spent < max_seconds and start < 2 * requests.n):
        t = time.perf_counter()
        requests.send(start, batch)
        spent += time.perf_counter() - t
        rows += batch
        start += batch
    return rows / spent


def tensor_bytes(module: torch.nn.Module) -> int:
    """Bytes of a module's parameters and buffers as held (shared storage counted once), with
    the scales a quantized weight keeps beside it (bitsandbytes' `SCB`, `quant_state`)."""
    seen: set[tuple[str, int]] = set()
    total = 0

    def add(t) -> None:
        nonlocal total
        if not isinstance(t, torch.Tensor) or t.numel() == 0:
            return
        storage = t.untyped_storage()
        key = (str(t.device), storage.data_ptr())
        if key not in seen:
            seen.add(key)
            total += storage.nbytes()

    for t in [*module.parameters(), *module.buffers()]:
        add(t)
        add(getattr(t, "SCB", None))
        state = getattr(t, "quant_state", None)
        while state is not None:
            add(getattr(state, "absmax", None))
            add(getattr(state, "code", None))
            state = getattr(state, "state2", None)
    return total


def adapter_bytes(path: Path) -> int:
    """The adapter's bytes on disk: its weights and its peft config (what `train` reports)."""
    return sum((Path(path) / f).stat().st_size for f in (WEIGHTS, CONFIG))


def base_disk_bytes(base_path: Path) -> int:
    """The base folder's weights files on disk."""
    return sum(f.stat().st_size for f in Path(base_path).glob("*.safetensors"))
