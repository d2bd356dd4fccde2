"""An adapter directory's metadata and sizes, checked field by field before anything is used.

`read_adapter` (store.py) runs these checks; each returns the problems it found as sentences,
so one refusal names every bad field of a file. An adapter that passes is one the engine,
the server listings and plain peft read the same way: no later code meets a field of the
wrong type, a rank its tensors do not have, or a file bigger than what it claims to be.
"""

from __future__ import annotations

import json
import math
import os
import re
import stat
import struct
from pathlib import Path

from ..errors import TaskError, shown
from ..tasks import TaskSpec

FORMAT_VERSION = 1
MAX_METADATA_BYTES = 1 << 20
"""adapter_config.json, task.json and checksums.json are small; a larger one is refused unread."""
MAX_EXTRA_FILE_BYTES = 64 << 20
"""Other listed files (curves.png, the confusion matrix) are hashed, never parsed."""
MAX_HEADER_BYTES = 16 << 20
"""A safetensors header (the JSON table of tensors) is refused unread beyond this."""
FLOAT_DTYPES = {"F16", "BF16", "F32", "F64"}
QUANTIZE_MODES = ("8bit", "4bit")
"""What `backbone.quantization.mode` may say (backbones.quantize's modes)."""
_FILE_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.\-]{0,127}")
_HEX64 = re.compile(r"[0-9a-f]{64}")


def _number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def checksum_problems(sums) -> list[str]:
    """checksums.json: file name -> sha256 hex, names plain (no paths, no hidden files)."""
    if not isinstance(sums, dict):
        return [f"checksums.json must be an object of file name -> sha256, got {type(sums).__name__}"]
    out = []
    for name, digest in sums.items():
        if not _FILE_NAME.fullmatch(name) or ".." in name:
            out.append(f"checksums.json lists {name[:80]!r}, which is not a plain file name")
        elif not (isinstance(digest, str) and _HEX64.fullmatch(digest)):
            out.append(f"checksums.json has no sha256 hex digest for {name}")
    return out


def config_problems(config) -> list[str]:
    """adapter_config.json: the fields the engine's LoRA arithmetic reads, and the ones it lacks."""
    if not isinstance(config, dict):
        return [f"adapter_config.json must be a JSON object, got {type(config).__name__}"]
    out = []
    if config.get("peft_type") != "LORA":
        out.append(f"peft_type is {config.get('peft_type')!r}, not 'LORA' (only LoRA adapters are "
                   "supported)")
    r = config.get("r")
    if not (isinstance(r, int) and not isinstance(r, bool) and r >= 1):
        out.append(f"r must be an integer >= 1, got {r!r}")
    alpha = config.get("lora_alpha")
    if not (_number(alpha) and alpha > 0):
        out.append(f"lora_alpha must be a number > 0, got {alpha!r}")
    for key in ("use_rslora", "use_dora", "fan_in_fan_out", "inference_mode"):
        if key in config and config[key] is not None and not isinstance(config[key], bool):
            out.append(f"{key} must be true or false, got {config[key]!r}")
    # What the engine does not compute: refused, never served wrongly.
    if config.get("use_dora") is True:
        out.append("use_dora is true: DoRA adapters are not served by the engine (it computes "
                   "plain LoRA); retrain without DoRA or serve it with plain peft")
    if config.get("fan_in_fan_out") is True:
        out.append("fan_in_fan_out is true, which is for Conv1D bases, not DistilBERT or ALBERT")
    if config.get("bias", "none") != "none" or config.get("lora_bias", False) not in (False, None):
        out.append(f"bias is {config.get('bias')!r}: LoRA biases are not served; retrain with "
                   "bias='none'")
    for key, check, what in (("rank_pattern", lambda v: isinstance(v, int) and not isinstance(v, bool)
                              and v >= 1, "integers >= 1"),
                             ("alpha_pattern", lambda v: _number(v) and v > 0, "numbers > 0")):
        pattern = config.get(key) or {}
        if not isinstance(pattern, dict) or not all(isinstance(k, str) and check(v)
                                                    for k, v in pattern.items()):
            out.append(f"{key} must map module names to {what}, got {shown(pattern)}")
    targets = config.get("target_modules")
    if targets is not None and not isinstance(targets, str) and not (
            isinstance(targets, list) and all(isinstance(t, str) for t in targets)):
        out.append(f"target_modules must be a name or a list of names, got {shown(targets)}")
    saved = config.get("modules_to_save")
    if saved is not None and not (isinstance(saved, list) and all(isinstance(m, str) for m in saved)):
        out.append(f"modules_to_save must be a list of names or null, got {shown(saved)}")
    return out


def rank_problems(config: dict, pairs: dict) -> list[str]:
    """Each module's LoRA rank must be the one its scale is computed with."""
    out = []
    ranks, alphas = config.get("rank_pattern") or {}, config.get("alpha_pattern") or {}
    for key in sorted(set(ranks) | set(alphas)):
        if key not in pairs:
            out.append(f"rank_pattern/alpha_pattern key {key!r} is not the exact path of a module "
                       "the adapter holds (pattern keys are not served)")
    for module, (a, _) in pairs.items():
        want = ranks.get(module, config.get("r"))
        if a.shape[0] != want:
            out.append(f"the LoRA factors of {module} have rank {a.shape[0]}, but the config says "
                       f"{want}")
    return out


def task_problems(meta) -> tuple[TaskSpec | None, list[str]]:
    """task.json: the format version, the base it was trained on, and a valid task card."""
    if not isinstance(meta, dict):
        return None, [f"task.json must be a JSON object, got {type(meta).__name__}"]
    out = []
    version = meta.get("format_version")
    if not (isinstance(version, int) and not isinstance(version, bool) and version == FORMAT_VERSION):
        out.append(f"format_version {version!r} is not {FORMAT_VERSION} (upgrade adapters-kit or "
                   "re-export the adapter)")
    backbone = meta.get("backbone")
    if not isinstance(backbone, dict) or not isinstance(backbone.get("fingerprint"), str):
        out.append("backbone must be an object with the base's fingerprint (a string)")
    elif not isinstance(backbone.get("name", ""), (str, type(None))):
        out.append(f"backbone.name must be a string, got {shown(backbone.get('name'))}")
    elif backbone.get("quantization") is not None and not (
            isinstance(backbone["quantization"], dict)
            and backbone["quantization"].get("mode") in QUANTIZE_MODES
            and isinstance(backbone["quantization"].get("double_quant", False), bool)):
        # trained on a bitsandbytes base (QLoRA): the fingerprint is still the unquantized base's
        out.append(f"backbone.quantization must be null or an object with mode one of "
                   f"{list(QUANTIZE_MODES)} and a boolean double_quant, got "
                   f"{shown(backbone['quantization'])}")
    task = meta.get("task")
    spec = None
    if not isinstance(task, dict):
        out.append(f"task must be an object (the task card), got {type(task).__name__}")
    else:
        try:
            spec = TaskSpec.from_dict({k: v for k, v in task.items() if k != "source"})
        except TaskError as e:  # "task 'x' is invalid:\n  - a\n  - b": the problems alone
            problems = str(e).split("\n  - ")
            out.append("its task card is invalid: " + "; ".join(problems[1:] or problems))
        except (TypeError, ValueError) as e:  # a field TaskSpec does not know the shape of
            out.append(f"its task card is invalid: {e}")
    return spec, out


def file_problems(path: Path, sums: dict, required: tuple[str, ...], weights: str,
                  max_weight_bytes: int | None, sizes: dict[str, int] | None = None) -> list[str]:
    """Every listed file is a regular file within its size limit, checked before it is read.

    The weights file's size must be exactly what its header claims, and the tensors it claims
    no more than `max_weight_bytes` (what the base allows) and floating point. `sizes`, if
    given, receives each file's size.
    """
    out = []
    where = os.fspath(path)
    for name in sums:
        file = os.path.join(where, name)
        try:
            st = os.stat(file)  # follows a link: a hub snapshot links to its blobs
        except OSError:
            out.append(f"{name} is listed in checksums.json but missing")
            continue
        if not stat.S_ISREG(st.st_mode):
            out.append(f"{name} is not a regular file")
            continue
        limit = MAX_METADATA_BYTES if name in required or name == "checksums.json" else (
            None if name == weights else MAX_EXTRA_FILE_BYTES)
        if limit is not None and st.st_size > limit:
            out.append(f"{name} is {st.st_size} bytes, over the {limit} allowed")
        if sizes is not None:
            sizes[name] = st.st_size
        if name == weights:
            out += _weights_problems(Path(file), st.st_size, max_weight_bytes)
    return out


def _weights_problems(file: Path, size: int, max_weight_bytes: int | None) -> list[str]:
    with open(file, "rb") as f:
        head = f.read(8)
        if len(head) < 8:
            return [f"{file.name} is {size} bytes: too short for a safetensors file"]
        (n,) = struct.unpack("<Q", head)
        if n > min(MAX_HEADER_BYTES, size - 8):
            return [f"{file.name} claims a {n}-byte header in a {size}-byte file"]
        raw = f.read(n)
    try:
        header = json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        return [f"{file.name} has an unreadable header (not a safetensors file)"]
    if not isinstance(header, dict):
        return [f"{file.name} has a header that is not a table of tensors"]
    end, claimed, out = 0, 0, []
    for key, info in header.items():
        if key == "__metadata__":
            continue
        offsets = info.get("data_offsets") if isinstance(info, dict) else None
        if not (isinstance(offsets, list) and len(offsets) == 2
                and all(isinstance(o, int) and o >= 0 for o in offsets) and offsets[0] <= offsets[1]):
            return [f"{file.name}: tensor {key[:80]!r} has no valid data offsets"]
        if info.get("dtype") not in FLOAT_DTYPES:
            out.append(f"{file.name}: tensor {key[:80]!r} is {info.get('dtype')!r}; LoRA and head "
                       "weights are floating point")
        end, claimed = max(end, offsets[1]), claimed + offsets[1] - offsets[0]
    if 8 + n + end != size:
        out.append(f"{file.name} is {size} bytes but its header accounts for {8 + n + end} (the file "
                   "is truncated or has data appended)")
    if max_weight_bytes is not None and claimed > max_weight_bytes:
        out.append(f"{file.name} claims {claimed} bytes of tensors, more than this base allows for "
                   f"one adapter ({max_weight_bytes})")
    return out
