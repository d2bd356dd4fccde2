"""Which device a run uses, and the precision that goes with it.

    resolve_device("auto")       # cuda:0 where a GPU is visible, else cpu (logged)
    resolve_device("cuda:1")     # a DeviceError naming the fix where there is no such GPU
    training_precision("auto", device)   # bf16 / fp16 (+ grad scaler) on CUDA; CPU as before

One place decides, so training, the engine, the server and the CLI agree. Names are
`auto`, `cpu`, `cuda` and `cuda:N`. Under `accelerate launch` with several processes,
`auto` and `cuda` mean this process's GPU (`cuda:LOCAL_RANK`), as DDP wants.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
from typing import Literal, get_args

import torch

from .errors import DeviceError

DEVICE_NAMES = "auto, cpu, cuda or cuda:N"
"""What a device setting may say (for messages and `--help`)."""

log = logging.getLogger("adapters_kit")


def device_problem(name) -> str | None:
    """Why `name` is not a device setting, or None: the syntax only, no GPU looked for (a Ray
    gateway checks the setting for replicas that may run on other machines)."""
    if isinstance(name, torch.device):
        name = str(name)
    if not isinstance(name, str):
        return f"device {name!r} must be a string: {DEVICE_NAMES}"
    text = name.strip().lower()
    if text in ("auto", "cpu", "cuda") or (text.startswith("cuda:") and text[5:].isdigit()):
        return None
    hint = " (CUDA devices are named cuda or cuda:N)" if text.startswith(("gpu", "cuda")) else ""
    return f"device {name!r} is not one of {DEVICE_NAMES}{hint}"


def _this_process_gpu() -> int:
    """The GPU index `auto`/`cuda` mean here: LOCAL_RANK under a multi-process launch."""
    count = torch.cuda.device_count()
    if int(os.environ.get("WORLD_SIZE", "1")) > 1 and "LOCAL_RANK" in os.environ:
        return int(os.environ["LOCAL_RANK"]) % count
    return torch.cuda.current_device()


def _no_cuda_reason() -> str:
    if torch.version.cuda is None:
        return f"this torch ({torch.__version__}) is built without CUDA"
    return (f"this torch ({torch.__version__}, CUDA {torch.version.cuda}) sees no GPU "
            f"(CUDA_VISIBLE_DEVICES={os.environ.get('CUDA_VISIBLE_DEVICES', 'unset')!r})")


def resolve_device(name: str | torch.device = "auto") -> torch.device:
    """The torch device for a setting; `auto` picks CUDA when present and logs its choice.

    Raises DeviceError (naming the fix) for a bad name or a GPU that is not there."""
    problem = device_problem(name)
    if problem:
        raise DeviceError(f"{problem}; pass --device auto (a GPU when present, else the CPU)")
    text = str(name).strip().lower()
    if text == "cpu":
        return torch.device("cpu")
    if text == "auto":
        device = torch.device("cuda", _this_process_gpu()) if torch.cuda.is_available() \
            else torch.device("cpu")
        log.info("device auto: chose %s", describe(device))
        return device
    if not torch.cuda.is_available():
        raise DeviceError(f"device {name!r} asks for a GPU, but {_no_cuda_reason()}; pass "
                          "--device cpu (or auto), or install a CUDA build of torch on a "
                          "machine with an NVIDIA GPU")
    if text == "cuda":
        return torch.device("cuda", _this_process_gpu())
    index, count = int(text[5:]), torch.cuda.device_count()
    if index >= count:
        raise DeviceError(f"device {name!r}: only {count} GPU(s) are visible (cuda:0 to "
                          f"cuda:{count - 1}); pass one of those, or --device cuda")
    return torch.device("cuda", index)


def describe(device: torch.device) -> str:
    """`cpu`, or `cuda:0 (NVIDIA H200)`: what a log line or a startup message shows."""
    if device.type == "cuda":
        return f"{device} ({torch.cuda.get_device_name(device)})"
    return str(device)


def choice_note(asked: str, device: torch.device) -> str:
    """The sentence a command prints about the device it runs on."""
    how = "chosen by --device auto" if str(asked).strip().lower() == "auto" else f"--device {asked}"
    extra = " (no GPU visible)" if device.type == "cpu" and str(asked).strip().lower() == "auto" else ""
    return f"device {describe(device)}, {how}{extra}"


def cuda_bf16(device: torch.device) -> bool:
    """Whether this GPU runs bf16 natively (compute capability 8.0 and up: A100, H100, ...)."""
    return device.type == "cuda" and torch.cuda.get_device_capability(device)[0] >= 8


def cpu_bf16() -> bool:
    """Whether this CPU runs bf16 natively (AVX512-BF16 / AMX)."""
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


TrainingPrecision = Literal["auto", "fp32", "bf16", "fp16"]
TRAINING_PRECISIONS = get_args(TrainingPrecision)


def training_precision(precision: str, device: torch.device) -> str:
    """`auto` made concrete for training on `device`.

    On CUDA: bf16 where the GPU runs it natively, else fp16 (which trains with a grad scaler,
    `grad_scaler`). On the CPU: bf16 where the CPU runs it natively, else fp32. Weights and
    optimizer state stay fp32 whichever is chosen; only autocast's matmuls change."""
    if precision != "auto":
        return precision
    if device.type == "cuda":
        return "bf16" if cuda_bf16(device) else "fp16"
    return "bf16" if cpu_bf16() else "fp32"


def precision_problem(precision: str, device: torch.device) -> str | None:
    """Why `precision` cannot train on `device`, or None."""
    if precision == "fp16" and device.type != "cuda":
        return (f"precision 'fp16' needs a CUDA device, not {device}; on the CPU use bf16 or "
                "fp32 (or auto)")
    return None


def engine_precision(precision: str, device: torch.device) -> str:
    """The serving engine's `auto`: bf16 on a GPU that runs it natively, else fp32 (the CPU's
    exact default). fp32 and bf16 stay as given."""
    if precision != "auto":
        return precision
    return "bf16" if cuda_bf16(device) else "fp32"


AUTOCAST_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


def autocast(precision: str, device: torch.device):
    """A factory of the autocast context for `precision` on `device`'s type (fp32: none)."""
    dtype = AUTOCAST_DTYPES.get(precision)
    if dtype is None:
        return contextlib.nullcontext
    return lambda: torch.autocast(device.type, dtype=dtype)


def grad_scaler(precision: str, device: torch.device):
    """A GradScaler where the precision needs one (fp16: small gradients underflow), else None."""
    if precision != "fp16":
        return None
    return torch.amp.GradScaler(device.type)


def keeps_thread_count(fn):
    """Decorate a function that may set torch's thread count (`TrainConfig.threads`): the
    caller's count is back when it returns or raises, so a training never changes what the
    rest of the process (a server's engine, the next test) runs with."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        before = torch.get_num_threads()
        try:
            return fn(*args, **kwargs)
        finally:
            torch.set_num_threads(before)

    return wrapper
