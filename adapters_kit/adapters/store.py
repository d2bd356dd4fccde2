"""The adapter directory format: writing it atomically, reading it back verified.

One directory per task adapter:

    adapter_config.json        peft's LoraConfig (plain `PeftModel.from_pretrained` reads it)
    adapter_model.safetensors  LoRA factors and the whole task classifier, under peft's key names
    task.json                  the task card, labels, metrics, base fingerprint, versions, time
    curves.png                 training loss and dev metric (when trained here)
    checksums.json             sha256 of every other file

Adapter files are untrusted input: only safetensors is read, never pickle, and every check
(checksum, format, shapes, base fingerprint) passes before a tensor is handed to anyone.

This module is the format alone; the stores of many adapters build on it (`local.LocalStore`,
a folder; `remote.RemoteStore`, an object store) and `door.open_store` opens either.
"""

from __future__ import annotations

import copy
import hashlib
import json
import os
import platform
import struct
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

from ..backbones import EMBEDDED, OUTPUT_LAYERS
from ..errors import AdapterFileError
from ..files import atomic_directory, recover_directory, sha256_file
from ..tasks import SERVED_NAME_RULE, TaskSpec, is_served_name
from ..tasks.kinds import kind_of
from . import meta as meta
from .meta import FORMAT_VERSION

CONFIG = "adapter_config.json"
WEIGHTS = "adapter_model.safetensors"
TASK = "task.json"
CHECKSUMS = "checksums.json"
_PICKLES = (".bin", ".pt", ".pth", ".pkl", ".pickle", ".ckpt")
_PREFIX = "base_model.model."


def check_name(name: str) -> str:
    """`name`, if it may name an adapter in a store (a folder, or a key part); else an
    AdapterFileError saying the rule."""
    if not is_served_name(name):
        raise AdapterFileError(f"{name!r} is not an adapter name: use {SERVED_NAME_RULE}")
    return name


def package_versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    out = {"python": platform.python_version()}
    for name in ("adapters-kit", "torch", "transformers", "peft", "safetensors"):
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            pass
    return out


def base_name(backbone: dict | None, local_folder: str | None) -> str | None:
    """The `base_model_name_or_path` an adapter of `backbone` (task.json's entry) records: a
    name that resolves on any machine (`resolve_base`), else this machine's folder."""
    name = str((backbone or {}).get("name") or "")
    if not name:
        return local_folder
    if name in EMBEDDED:
        return name
    if Path(name).expanduser().exists():
        return local_folder  # a folder of this machine: nothing names it elsewhere
    return name  # a hub id


def write_checksums(directory: Path) -> None:
    sums = {p.name: sha256_file(p) for p in sorted(directory.iterdir())
            if p.is_file() and p.name != CHECKSUMS}
    (directory / CHECKSUMS).write_text(json.dumps(sums, indent=2))


def save_adapter(directory: Path, peft_model, task: dict, overwrite: bool = False,
                 extra_files: dict[str, bytes] | None = None) -> Path:
    """Write a trained peft model's adapter (LoRA + classifier) and `task` metadata atomically."""
    from peft import get_peft_model_state_dict
    from safetensors.torch import save_file

    directory = Path(directory)
    recover_directory(directory.parent)
    with atomic_directory(directory, overwrite=overwrite) as tmp:
        config = copy.deepcopy(peft_model.peft_config["default"])  # the caller's stays trainable
        config.inference_mode = True
        config.base_model_name_or_path = base_name(task.get("backbone"),
                                                   config.base_model_name_or_path)
        config.save_pretrained(str(tmp))
        state = get_peft_model_state_dict(peft_model)
        save_file({k: v.detach().contiguous().cpu() for k, v in state.items()}, str(tmp / WEIGHTS),
                  metadata={"format": "pt"})
        meta = {"format_version": FORMAT_VERSION, "created": time.strftime("%Y-%m-%dT%H:%M:%SZ",
                time.gmtime()), "versions": package_versions(), **task}
        (tmp / TASK).write_text(json.dumps(meta, indent=2, default=str))
        for name, data in (extra_files or {}).items():
            (tmp / name).write_bytes(data)
        write_checksums(tmp)
    return directory


@dataclass
class AdapterFiles:
    """A verified adapter directory in memory."""

    path: Path
    config: dict
    task: dict
    tensors: dict[str, torch.Tensor]
    nbytes: int
    digest: str
    """sha256 of checksums.json: names this exact content."""
    spec: TaskSpec
    """The task card in task.json, validated."""
    _head: torch.Tensor | None = field(default=None, repr=False, compare=False)
    source: str | None = None
    """Where the files came from when not `path` itself (a remote store's version URL)."""

    @property
    def where(self) -> str:
        """What messages name: the remote key the files came from, else the local folder."""
        return self.source or str(self.path)

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def kind(self) -> str:
        return self.spec.kind

    @property
    def head_name(self) -> str:
        """The task's output layer: `classifier`, or `qa_outputs` for extractive QA."""
        return kind_of(self.spec).head

    @property
    def num_outputs(self) -> int:
        return self.spec.num_outputs

    @property
    def fingerprint(self) -> str:
        return self.task["backbone"]["fingerprint"]

    def lora_pairs(self, include_head: bool = False) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
        """Module path (relative to the HF model) -> (A [r, d_in], B [d_out, r])."""
        out = {}
        for key, a in self.tensors.items():
            if key.endswith(".lora_A.weight"):
                module = key[len(_PREFIX) : -len(".lora_A.weight")]
                if module in OUTPUT_LAYERS and not include_head:
                    continue
                out[module] = (a, self.tensors[key.replace(".lora_A.", ".lora_B.")])
        return out

    def head(self) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The task's output layer as a dense weight [n_outputs, hidden] and bias [n_outputs].

        Saved whole (peft's `modules_to_save`), or as LoRA over the base's zero output layer.
        """
        name = self.head_name
        full = self.tensors.get(_PREFIX + name + ".weight")
        if full is not None:
            return full, self.tensors.get(_PREFIX + name + ".bias")
        if self._head is None:  # checked, then loaded: computed once
            a, b = self.lora_pairs(include_head=True)[name]
            # B @ A as a sum of the rank's outer products, elementwise: a BLAS call here woke
            # torch's idle worker threads and cost about 10 ms of a 2 ms load on an idle engine
            self._head = (b.float()[:, :, None] * a.float()[None]).sum(1) * self.scale(name)
        return self._head, None

    def dense_override(self, module: str) -> tuple[torch.Tensor, torch.Tensor] | None:
        """A head dense layer saved whole (the naive design), if this adapter has one."""
        w = self.tensors.get(f"{_PREFIX}{module}.weight")
        return None if w is None else (w, self.tensors[f"{_PREFIX}{module}.bias"])

    def scale(self, module: str) -> float:
        r = (self.config.get("rank_pattern") or {}).get(module, self.config["r"])
        alpha = (self.config.get("alpha_pattern") or {}).get(module, self.config["lora_alpha"])
        return alpha / (r**0.5) if self.config.get("use_rslora") else alpha / r


def _refuse(path: Path, why: str, fix: str) -> AdapterFileError:
    return AdapterFileError(f"adapter {path} refused: {why}; {fix}. Nothing was loaded from it")


def read_adapter(path: str | Path, max_weight_bytes: int | None = None) -> AdapterFiles:
    """Read and verify an adapter directory's own integrity (not yet against a base).

    Every failure, whatever its cause, is an AdapterFileError naming the file and the fix.
    `max_weight_bytes` bounds the tensors the weights file may claim; it is checked from the
    file's header before the tensors are read (a loading engine passes what its base allows).
    """
    path = Path(path)
    try:
        return _read_adapter(path, max_weight_bytes)
    except AdapterFileError:
        raise
    except Exception as e:  # a check this code lacks must still refuse, not crash the caller
        raise _refuse(path, f"it could not be read ({type(e).__name__}: {e})",
                      "re-export the adapter with adapters-kit") from None


def _read_adapter(path: Path, max_weight_bytes: int | None) -> AdapterFiles:
    from safetensors import SafetensorError
    from safetensors.torch import load

    if not path.is_dir():
        raise AdapterFileError(f"adapter directory {path} does not exist")
    where = os.fspath(path)  # plain strings below: a load runs this for every file it checks
    pickles = [e.name for e in os.scandir(where) if os.path.splitext(e.name)[1].lower() in _PICKLES]
    if pickles:
        raise _refuse(path, f"it holds pickle files {pickles}, which can run code when read",
                      "re-save the adapter as safetensors (peft: save_pretrained(..., "
                      "safe_serialization=True)) and delete the pickle files")
    for required in (CONFIG, WEIGHTS, TASK, CHECKSUMS):
        if not os.path.isfile(os.path.join(where, required)):
            raise _refuse(path, f"{required} is missing", "re-export the adapter with adapters-kit")
    if os.stat(os.path.join(where, CHECKSUMS)).st_size > meta.MAX_METADATA_BYTES:
        raise _refuse(path, f"{CHECKSUMS} is over {meta.MAX_METADATA_BYTES} bytes", "re-export the adapter")
    with open(os.path.join(where, CHECKSUMS), "rb") as f:
        raw_sums = f.read()
    try:
        sums = json.loads(raw_sums)
    except (ValueError, UnicodeDecodeError, RecursionError) as e:
        raise _refuse(path, f"{CHECKSUMS} is not valid JSON ({e})", "re-export the adapter") from None
    problems = meta.checksum_problems(sums)
    if not problems:
        problems = [f"{CHECKSUMS} does not cover {n}" for n in (CONFIG, WEIGHTS, TASK) if n not in sums]
    sizes: dict[str, int] = {}
    if not problems:  # sizes from the file system and the weights' header, before any read
        problems = meta.file_problems(path, sums, (CONFIG, TASK), WEIGHTS, max_weight_bytes, sizes)
    if problems:
        raise _refuse(path, "; ".join(problems), "re-export the adapter with adapters-kit")
    # The metadata and weights are read once and parsed from the bytes that were checked, so a
    # file changed between the check and the read cannot slip in.
    checked: dict[str, bytes] = {}
    for name, expected in sums.items():
        f = os.path.join(where, name)
        if name in (CONFIG, WEIGHTS, TASK):
            with open(f, "rb") as fh:
                data = fh.read()
            ok = hashlib.sha256(data).hexdigest() == expected
            checked[name] = data
        else:
            ok = sha256_file(f) == expected
        if not ok:
            raise _refuse(path, f"checksum mismatch for {name} (the file changed or is corrupt)",
                          "copy the adapter again from its source, or retrain it")
    try:
        config = json.loads(checked[CONFIG])
        task = json.loads(checked[TASK])
    except (ValueError, UnicodeDecodeError, RecursionError) as e:
        raise _refuse(path, f"metadata is not valid JSON ({e})", "re-export the adapter") from None
    problems = meta.config_problems(config)
    spec, task_problems = meta.task_problems(task)
    problems += task_problems
    if problems:
        raise _refuse(path, "; ".join(problems), "fix the field or re-export the adapter with "
                      "adapters-kit")
    try:
        tensors = dict(sorted(load(checked[WEIGHTS]).items()))  # same order in every process
    except (SafetensorError, OSError, ValueError) as e:
        raise _refuse(path, f"{WEIGHTS} is not a readable safetensors file ({e})",
                      "copy the adapter again; the file may be truncated") from None
    bad = _non_finite(tensors, checked[WEIGHTS])
    del checked
    head = kind_of(spec).head
    if _PREFIX + head + ".weight" not in tensors and _PREFIX + head + ".lora_A.weight" not in tensors:
        raise _refuse(path, f"it has no task head ({head}) weights",
                      "train it with adapters-kit, which saves the head with the adapter")
    if bad:
        raise _refuse(path, f"tensors {bad[:3]} hold NaN or infinite values (a diverged training)",
                      "retrain with a lower learning rate")
    nbytes = sum(sizes.values())
    digest = hashlib.sha256(raw_sums).hexdigest()
    files = AdapterFiles(path=path, config=config, task=task, tensors=tensors, nbytes=nbytes,
                         digest=digest, spec=spec)
    missing = [k for k in tensors if ".lora_A." in k and k.replace(".lora_A.", ".lora_B.") not in tensors]
    if missing:
        raise _refuse(path, f"{missing[:3]} have no lora_B partner", "re-export the adapter")
    pairs = files.lora_pairs(include_head=True)
    for module, (a, b) in pairs.items():
        if a.dim() != 2 or b.dim() != 2 or a.shape[0] != b.shape[1]:
            raise _refuse(path, f"LoRA factors of {module} have shapes {tuple(a.shape)} and "
                          f"{tuple(b.shape)}, which do not multiply", "re-export the adapter")
    problems = meta.rank_problems(config, pairs)
    if problems:
        raise _refuse(path, "; ".join(problems), "re-export the adapter")
    return files


def _non_finite(tensors: dict[str, torch.Tensor], raw: bytes) -> list[str]:
    """Names of the tensors holding NaN or an infinity.

    First one sum over the file's whole data region, read in place, when every tensor is
    float32 (safetensors leaves no gaps between tensors): a NaN or an infinity makes it
    non-finite, so a sound file is cleared in one pass. Otherwise, or when that sum is not
    finite (a NaN, or finite values whose sum overflows), each tensor is checked."""
    if tensors and all(t.dtype == torch.float32 for t in tensors.values()):
        import numpy as np

        (n,) = struct.unpack("<Q", raw[:8])
        data = np.frombuffer(raw, dtype="<f4", offset=8 + n, count=(len(raw) - 8 - n) // 4)
        with np.errstate(over="ignore", invalid="ignore"):
            if np.isfinite(data.sum()):
                return []
    return [k for k, t in tensors.items() if t.is_floating_point() and not torch.isfinite(t).all()]


def check_against_base(files: AdapterFiles, model: torch.nn.Module, fingerprint: str) -> None:
    """Refuse an adapter made for another base: fingerprint, module names and shapes."""
    if files.fingerprint != fingerprint:
        raise _refuse(files.where, f"it was trained on base {files.fingerprint[:12]} "
                      f"({files.task['backbone'].get('name')}), not this base {fingerprint[:12]}",
                      "load it with the backbone it was trained on, or retrain it on this one")
    n_out = files.num_outputs
    hidden = model.config.hidden_size if hasattr(model.config, "hidden_size") else model.config.dim
    pairs = files.lora_pairs(include_head=True)
    for module in sorted(pairs, key=lambda m: m == files.head_name):  # the base's layers first
        a, b = pairs[module]
        if module == files.head_name:  # the output layer is the task's own, not the base's
            if a.shape[1] != hidden or b.shape[0] != n_out:
                raise _refuse(files.where, f"the {module} LoRA is {b.shape[0]}x{a.shape[1]} but "
                              f"this base and task need {n_out}x{hidden}",
                              "use the backbone the adapter was trained on")
            continue
        try:
            layer = model.get_submodule(module)
        except AttributeError:
            raise _refuse(files.where, f"module {module} does not exist in this base",
                          "check the backbone and the target preset") from None
        layer = getattr(layer, "base", layer)
        if not isinstance(layer, torch.nn.Linear):
            raise _refuse(files.where, f"module {module} is not a linear layer", "check the backbone")
        if a.shape[1] != layer.in_features or b.shape[0] != layer.out_features:
            raise _refuse(files.where, f"LoRA for {module} is {b.shape[0]}x{a.shape[1]} but the "
                          f"base layer is {layer.out_features}x{layer.in_features}",
                          "use the backbone the adapter was trained on")
    w, bias = files.head()
    if tuple(w.shape) != (n_out, hidden) or (bias is not None and tuple(bias.shape) != (n_out,)):
        raise _refuse(files.where, f"the {files.head_name} is {tuple(w.shape)} but this base and task need "
                      f"({n_out}, {hidden})", "use the backbone the adapter was trained on")
