"""The resume state of a run, beside its adapter directory: tensors in safetensors, the rest in
JSON, never pickle.

`state.safetensors`: the trainable tensors (`param/<name>`), every tensor of the optimizer's
`state_dict()` (`optim/<index>/<key>`) and the torch RNG (`rng/torch`). `optimizer.json`: the
optimizer's other state (its param groups' hyper-parameters, any plain values) and the
schedule's. `progress.json`: the fit's counters and history. `best.safetensors`: the best
adapter state so far.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import torch

from ..files import atomic_directory
from .config import ResolvedConfig

FORMAT = 2
"""Bumped when the layout changes: a checkpoint of another format is ignored (a fresh start)."""
STATE, OPTIMIZER, PROGRESS, BEST = "state.safetensors", "optimizer.json", "progress.json", "best.safetensors"
KEY_LEAVES_OUT = ("progress", "resume", "overwrite", "threads", "baseline", "max_seconds", "device")
"""Settings that do not change what is trained: a checkpoint stays valid across them."""


def run_key(run: ResolvedConfig, base_fingerprint: str, train_rows: int) -> str:
    """What a checkpoint must match to be resumed: the settings, the task, the base, the data."""
    src = [run.settings(leave_out=KEY_LEAVES_OUT), run.task.to_dict(), base_fingerprint,
           train_rows, FORMAT]
    return hashlib.sha256(json.dumps(src, sort_keys=True, default=str).encode()).hexdigest()


def optimizer_state(optimizer: torch.optim.Optimizer, names: list[str]) -> tuple[dict, dict]:
    """`optimizer.state_dict()` split into tensors (for safetensors) and plain values (JSON).

    `names`: the parameter names in the optimizer's order, recorded so that a restore into
    other parameters is refused."""
    sd = optimizer.state_dict()
    tensors, plain = {}, {}

    def split(prefix: str, entry: dict, into: dict) -> None:
        # a nested dict (bitsandbytes' 8-bit AdamW keeps its moments in one) nests its keys
        for k, v in entry.items():
            if torch.is_tensor(v):
                tensors[f"{prefix}/{k}"] = v
            elif isinstance(v, dict):
                split(f"{prefix}/{k}", v, into.setdefault(k, {}))
            else:
                into[k] = v

    for index, entry in sd["state"].items():
        split(f"optim/{index}", entry, plain.setdefault(str(index), {}))
    return tensors, {"state": plain, "param_groups": sd["param_groups"], "param_names": names}


def _merge(into: dict, entry: dict) -> None:
    for k, v in entry.items():
        if isinstance(v, dict) and isinstance(into.get(k), dict):
            _merge(into[k], v)
        else:
            into[k] = v


def load_optimizer_state(optimizer: torch.optim.Optimizer, tensors: dict, meta: dict) -> None:
    """Restore what `optimizer_state` split; the inverse, whatever the optimizer's keys."""
    state: dict[int, dict] = {}
    for key, value in tensors.items():
        if key.startswith("optim/"):
            _, index, *path = key.split("/")
            node = state.setdefault(int(index), {})
            for k in path[:-1]:
                node = node.setdefault(k, {})
            node[path[-1]] = value
    for index, entry in meta["state"].items():
        _merge(state.setdefault(int(index), {}), entry)
    fresh = optimizer.state_dict()["param_groups"]
    # JSON has no tuples: a hyper-parameter that is one in a fresh optimizer (AdamW's betas) is one again
    groups = [{k: tuple(v) if isinstance(now.get(k), tuple) else v for k, v in saved.items()}
              for saved, now in zip(meta["param_groups"], fresh)]
    optimizer.load_state_dict({"state": state, "param_groups": groups})


def parameter_names(params: dict[str, torch.nn.Parameter], optimizer: torch.optim.Optimizer) -> list[str]:
    by_id = {id(p): n for n, p in params.items()}
    return [by_id[id(p)] for group in optimizer.param_groups for p in group["params"]]


class Checkpoint:
    """Resume state: trainable tensors, optimizer and schedule state, RNG, the best state so far.

    Each save replaces the whole directory atomically, so the best state is written into
    every save: a save after an evaluation that did not improve must not drop it."""

    def __init__(self, directory: Path, key: str) -> None:
        self.dir, self.key = directory, key

    def exists(self) -> bool:
        return (self.dir / PROGRESS).exists()

    def save(self, params, optimizer, schedule, progress: dict,
             best: dict[str, torch.Tensor] | None) -> None:
        from safetensors.torch import save_file

        tensors, plain = optimizer_state(optimizer, parameter_names(params, optimizer))
        tensors.update({f"param/{n}": p.detach().clone() for n, p in params.items()})
        tensors["rng/torch"] = torch.get_rng_state()
        if torch.cuda.is_available() and torch.cuda.is_initialized():  # dropout on a GPU draws here
            tensors["rng/cuda"] = torch.cuda.get_rng_state()
        with atomic_directory(self.dir, overwrite=True) as tmp:
            save_file({k: v.contiguous() for k, v in tensors.items()}, str(tmp / STATE))
            (tmp / OPTIMIZER).write_text(json.dumps({"optimizer": plain,
                                                     "schedule": schedule.state_dict()}))
            (tmp / PROGRESS).write_text(json.dumps({"key": self.key, **progress}))
            if best is not None:
                save_file({k: v.contiguous() for k, v in best.items()}, str(tmp / BEST))

    def load(self, params, optimizer, schedule) -> dict | None:
        """Restore into `params`, `optimizer`, `schedule` and the RNG; the saved progress, or
        None when there is no checkpoint of this run (nothing is changed then)."""
        from safetensors.torch import load_file

        if not self.exists():
            return None
        progress = json.loads((self.dir / PROGRESS).read_text())
        if progress.pop("key", None) != self.key:
            return None  # a checkpoint of another configuration (or format): start afresh
        plain = json.loads((self.dir / OPTIMIZER).read_text())
        if plain["optimizer"]["param_names"] != parameter_names(params, optimizer):
            return None
        tensors = load_file(str(self.dir / STATE))
        with torch.no_grad():
            for n, p in params.items():
                p.copy_(tensors[f"param/{n}"])
        load_optimizer_state(optimizer, tensors, plain["optimizer"])
        schedule.load_state_dict(plain["schedule"])
        torch.set_rng_state(tensors["rng/torch"])
        if "rng/cuda" in tensors and torch.cuda.is_available():
            torch.cuda.set_rng_state(tensors["rng/cuda"])
        return progress

    def best(self) -> dict[str, torch.Tensor] | None:
        """The best adapter state saved with the checkpoint, if any."""
        from safetensors.torch import load_file

        path = self.dir / BEST
        return load_file(str(path)) if path.exists() else None

    def remove(self) -> None:
        shutil.rmtree(self.dir, ignore_errors=True)
