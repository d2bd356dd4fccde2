"""The grid of a comparison: which backbones and precisions, which of them can run here and,
for each that cannot, why; each cell's store name and the key its trained adapter must match.

What this adapters_kit supports is read at run time, not assumed: quantized bases
(`TrainConfig.quantize`, `MultiTaskModel(quantize=...)`) and a device setting
(`TrainConfig.device`, `MultiTaskModel(device=...)`) count only where both sides take them.
"""

from __future__ import annotations

import hashlib
import inspect
import json
import re
import socket
from dataclasses import dataclass
from pathlib import Path

import torch

from ..backbones import EMBEDDED
from ..backbones.made import read_registry
from ..errors import ConfigError

PRECISIONS = ("fp32", "bf16", "8bit", "4bit")
QUANTIZED = ("8bit", "4bit")
HUB_BACKBONES = ("distilbert-base-uncased", "albert-base-v2")
"""Compared by default besides the embedded backbones, when the hub can give them."""
DEFAULT_BUDGET_S = 120.0
"""Training seconds per combination when neither a budget nor epochs are given."""


@dataclass
class Cell:
    """One combination of the grid: a backbone at a precision, and why it cannot run, if so."""

    backbone: str
    precision: str
    skipped: str | None = None

    @property
    def label(self) -> str:
        return f"{self.backbone} {self.precision}"

    def store_name(self, task: str) -> str:
        """The adapter's name in the comparison's store: it says the combination."""
        return f"{task}--{slug(self.backbone)}--{self.precision}"


def slug(name: str) -> str:
    """A backbone name (hub id or folder) as one path component."""
    return re.sub(r"[^A-Za-z0-9_.]+", "-", name).strip("-.")[-80:] or "backbone"


def names(value: str | list[str] | tuple[str, ...] | None, what: str) -> list[str] | None:
    """A comma-separated list (or a list) without blanks and repeats, or None."""
    if value is None:
        return None
    items = value.split(",") if isinstance(value, str) else list(value)
    out = list(dict.fromkeys(i.strip() for i in items if i and i.strip()))
    if not out:
        raise ConfigError(f"{what} is empty; give at least one name, e.g. "
                          + ("embedded-distilbert,embedded-albert" if what == "backbones"
                             else "fp32,bf16"))
    return out


def takes(target, name: str) -> bool:
    """Whether a dataclass has field `name`, or a class's constructor takes argument `name`."""
    if name in getattr(target, "__dataclass_fields__", {}):
        return True
    try:
        return name in inspect.signature(target).parameters
    except (TypeError, ValueError):
        return False


def device_support() -> bool:
    from ..engine.model import MultiTaskModel
    from ..training.loop import TrainConfig

    return takes(TrainConfig, "device") and takes(MultiTaskModel, "device")


def check_device(device: str | None) -> str:
    """The device to compare on, checked: a ConfigError says what to pass instead."""
    if device is None:
        return "cpu"
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError) as e:
        raise ConfigError(f"device {device!r} is not a torch device ({e}); pass cpu, cuda or "
                          "cuda:N") from None
    if dev.type != "cpu" and not device_support():
        raise ConfigError(f"device {device!r}: this adapters_kit trains and serves on the CPU only "
                          "(no TrainConfig.device); leave --device out or pass cpu")
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"device {device!r}: no CUDA device is visible here; pass cpu")
    return str(dev)


def bf16_native(device: str) -> bool:
    """Whether `device` runs bf16 matmuls in hardware (else autocast emulates them, slowly)."""
    if device.startswith("cuda"):
        return torch.cuda.is_available() and torch.cuda.is_bf16_supported()
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


def quantized_problem(precision: str, device: str) -> str | None:
    """Why `precision` (8bit or 4bit) cannot run here, or None."""
    from ..engine.model import MultiTaskModel
    from ..training.loop import TrainConfig

    if not (takes(TrainConfig, "quantize") and takes(MultiTaskModel, "quantize")):
        return "this adapters_kit has no quantized bases (TrainConfig.quantize)"
    try:
        import bitsandbytes  # noqa: F401
    except ImportError:
        return "bitsandbytes is not installed: pip install adapters-kit[quant]"
    except Exception as e:  # it imports but cannot load its native library here
        return f"bitsandbytes cannot load here ({type(e).__name__}: {e})"
    return None


def precision_problem(precision: str, device: str, asked: bool) -> str | None:
    """Why `precision` is not compared here, or None. bf16 without hardware support still runs
    when asked for by name (emulated: slower than fp32, worth seeing once)."""
    if precision in QUANTIZED:
        return quantized_problem(precision, device)
    if precision == "bf16" and not asked and not bf16_native(device):
        return (f"bf16 is not native on this {device.split(':')[0].upper()} (no AVX512-BF16/AMX "
                "or bf16 GPU), so it would only be slower; ask for it with --precisions to "
                "measure it anyway")
    return None


def backbone_problem(name: str) -> str | None:
    """Why a backbone cannot be had here, or None: a folder that is not there, or a hub name
    the hub cannot give (it loads later, or fails then, with its own reason)."""
    if name in EMBEDDED or name in read_registry() or Path(name).expanduser().exists():
        return None
    if name.startswith(("/", ".", "~")) or name.count("/") > 1 or "\\" in name:
        return f"there is no model folder {name}; give an existing folder or a hub name"
    return hub_problem(name)


def hub_problem(name: str, timeout_s: float = 3.0) -> str | None:
    """Why a hub backbone cannot be had here, or None (it is cached, or the hub answers)."""
    from huggingface_hub import constants, try_to_load_from_cache

    try:
        if isinstance(try_to_load_from_cache(name, "config.json"), str):
            return None
    except ValueError as e:  # not a valid repository id
        return f"{name} is neither a model folder nor a hub name ({e})"
    if constants.HF_HUB_OFFLINE:
        return (f"{name} is on the Hugging Face hub, HF_HUB_OFFLINE=1 forbids downloads, and it "
                "is not in the local cache")
    host = re.sub(r"^https?://", "", constants.ENDPOINT).split("/")[0]
    hostname, _, port = host.partition(":")
    try:
        socket.create_connection((hostname, int(port or 443)), timeout=timeout_s).close()
    except OSError as e:
        return (f"{name} needs the Hugging Face hub, which is not reachable from here ({host}: "
                f"{e}); set HF_HUB_OFFLINE=1 to use a copy in the local cache")
    return None


def plan(backbones: list[str] | None, precisions: list[str] | None, device: str) -> list[Cell]:
    """Every combination asked for (or the defaults), each marked with why it cannot run here.

    Defaults: the embedded backbones, the made students (`adapters-kit backbones make`), plus
    the hub ones (skipped, with the reason, when the hub cannot give them); every precision,
    those this machine cannot run skipped with the reason.
    """
    if precisions is not None:
        bad = [p for p in precisions if p not in PRECISIONS]
        if bad:
            raise ConfigError(f"precision {bad[0]!r} is not one of {', '.join(PRECISIONS)}; "
                              "e.g. --precisions fp32,bf16")
    asked_precisions = precisions is not None
    backbones = backbones or [*EMBEDDED, *sorted(read_registry()), *HUB_BACKBONES]
    precisions = precisions or list(PRECISIONS)
    for name in backbones:
        if name.startswith("embedded-") and name not in EMBEDDED:
            raise ConfigError(f"unknown embedded backbone {name!r}; choose one of {sorted(EMBEDDED)}")
    why_precision = {p: precision_problem(p, device, asked_precisions) for p in precisions}
    cells = []
    for name in backbones:
        why_backbone = backbone_problem(name)
        for p in precisions:
            cells.append(Cell(name, p, skipped=why_backbone or why_precision[p]))
    return cells


def train_key(settings: dict, spec_dict: dict, base_path: Path) -> str:
    """What a kept adapter must match to be reused: the resolved training settings, the task
    card, its data files (size and modification time) and the base folder's weights."""
    data = []
    for field in ("train", "dev"):
        location = spec_dict.get(field)
        if location and Path(location).is_file():
            st = Path(location).stat()
            data.append([location, st.st_size, st.st_mtime_ns])
        else:
            data.append(location)
    base = []
    for f in sorted(base_path.glob("*.safetensors")) + sorted(base_path.glob("*.json")):
        st = f.stat()
        base.append([f.name, st.st_size, st.st_mtime_ns])
    from ..version import __version__

    src = [settings, spec_dict, data, str(base_path), base, __version__]
    return hashlib.sha256(json.dumps(src, sort_keys=True, default=str).encode()).hexdigest()

