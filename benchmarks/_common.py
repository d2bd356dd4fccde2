"""Shared helpers for the benchmark scripts: offline setup and skipping without ../shared."""

from __future__ import annotations

import json
import os
import statistics
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
ROOT = Path(__file__).resolve().parent.parent
SHARED = Path(os.environ.get("ADAPTERS_KIT_SHARED_DATA", ROOT.parent / "shared" / "data"))


def require_shared(*parts: str) -> Path:
    """The shared data path, or exit cleanly (status 0, a JSON line saying why) if it is absent."""
    path = SHARED.joinpath(*parts)
    if not path.exists():
        print(json.dumps({"skipped": f"{path} not found (the shared data sits beside the checkout)"}))
        sys.exit(0)
    return path


def emit(record: dict) -> None:
    """The benchmark's last line: one JSON object."""
    print(json.dumps(record), flush=True)


def median_seconds(fn, reps: int) -> float:
    """Median seconds of `fn()` over `reps` runs, after one untimed warm-up run."""
    fn()
    times = []
    for _ in range(reps):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)
