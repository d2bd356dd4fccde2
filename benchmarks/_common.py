"""Shared helpers for the benchmark scripts: offline setup and skipping without ../shared."""

from __future__ import annotations

import atexit
import json
import os
import shutil
import statistics
import sys
import tempfile
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


def temp_dir(prefix: str) -> Path:
    """A fresh folder under the system's temp folder, removed when the benchmark exits (even on
    an error or Ctrl-C), so that runs leave no adapters or bases behind."""
    path = Path(tempfile.mkdtemp(prefix=prefix))
    atexit.register(shutil.rmtree, path, ignore_errors=True)
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


def random_adapters(backbone, root: Path, k: int, backbone_name: str | None = None) -> list[Path]:
    """K adapter directories `root/task000...` with random LoRA factors (r=8 on q/v plus the
    small head, 2 labels): timing does not depend on training. `backbone_name` is what the
    adapters record as their backbone (default: the base folder)."""
    import torch
    from peft import get_peft_model

    from adapters_kit import TaskSpec
    from adapters_kit.adapters.store import save_adapter
    from adapters_kit.backbones import fingerprint
    from adapters_kit.training.loop import lora_config

    base = backbone.load_model(2)
    fp = fingerprint(base)
    cfg = {"targets": "qv", "head": "lora", "rank": 8, "lora_alpha": 16, "lora_dropout": 0.0}
    peft_model = get_peft_model(base, lora_config(backbone.arch, 2, cfg))
    paths = []
    for i in range(k):
        torch.manual_seed(100 + i)
        with torch.no_grad():
            for n, p in peft_model.named_parameters():
                if ".lora_" in n:
                    p.normal_(0, 0.02)
        spec = TaskSpec(name=f"task{i:03d}", labels=["a", "b"])
        meta = {"task": spec.to_dict(), "backbone": {
            "name": backbone_name or str(backbone.path), "fingerprint": fp, "arch": backbone.arch}}
        paths.append(save_adapter(root / spec.name, peft_model, meta, overwrite=True))
    return paths
