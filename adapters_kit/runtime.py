"""One frozen base model, many resident task adapters, batches that mix tasks.

    model = MultiTaskModel("embedded-distilbert")
    model.load("adapters/sst2")
    model.load("adapters/support_intent")
    model.predict("sst2", ["a charming film"])
    model.predict_mixed([("sst2", "dull"), ("support_intent", "refund please")])

Task kinds mix freely in one batch: a sentiment row, a NER row and a QA row (question, context)
share one pass through the base, and each gets its own kind of answer.
"""

from __future__ import annotations

import contextlib
import threading
from dataclasses import dataclass
from pathlib import Path

import torch

from . import encoder
from .backbones import HEAD_DENSE_PATH, Backbone, fingerprint
from .data import collate
from .errors import AdapterFileError, DataError, UnknownTaskError
from .kinds import Kind, Row, kind_of
from .lora_bank import LoraBankLinear, Router, wrap
from .store import AdapterFiles, check_against_base, read_adapter
from .tasks import TaskSpec

TextInput = str | tuple[str, str] | list[str] | dict


@dataclass
class ResidentTask:
    """A task whose adapter occupies a slot."""

    name: str
    slot: int
    kind: str
    labels: list[str]
    pair: bool
    max_length: int
    head_weight: torch.Tensor  # [n_outputs, hidden]
    head_bias: torch.Tensor | None  # [n_outputs]
    dense: tuple[torch.Tensor, torch.Tensor] | None  # a head dense saved whole: [h, h], [h]
    path: Path
    nbytes: int
    digest: str
    spec: TaskSpec
    impl: Kind
    users: int = 0  # forward passes using this slot right now
    retired: bool = False  # unloaded or replaced: the slot is freed when `users` drops to 0


PRECISIONS = {"fp32", "bf16"}


class MultiTaskModel:
    """A shared base with a bank of LoRA adapters and one head per task."""

    def __init__(self, backbone: str | Path = "embedded-distilbert", capacity: int = 8,
                 precision: str = "fp32") -> None:
        if precision not in PRECISIONS:
            raise ValueError(f"precision {precision!r} is not one of {sorted(PRECISIONS)}; fp32 "
                             "matches plain peft exactly, bf16 is faster on CPUs with bf16 units")
        # bf16: the base's matmuls (and the LoRA factors') run under bf16 autocast; weights,
        # heads, norms and the returned outputs stay fp32.
        self.precision = precision
        self.backbone = Backbone.resolve(backbone)
        self.arch = self.backbone.arch
        self.model = self.backbone.load_model(num_labels=1)
        for p in self.model.parameters():
            p.requires_grad_(False)
        self.fingerprint = fingerprint(self.model)
        self.tokenizer = self.backbone.tokenizer()
        self.router = Router()
        self.dense_name = HEAD_DENSE_PATH[self.arch]
        # Only linears some resident adapter targets are wrapped (on its first load): the others
        # stay plain nn.Linear and cost nothing per forward.
        self.banks: dict[str, LoraBankLinear] = {}
        self.capacity = capacity
        self.tasks: dict[str, ResidentTask] = {}
        self._free = list(range(capacity - 1, 0, -1))  # slot 0 means "no adapter"
        self._lock = threading.RLock()

    # -- adapters -------------------------------------------------------------------------------

    def _take_slot(self) -> int:
        if not self._free:
            old = self.capacity
            self.capacity *= 2
            self._free = list(range(self.capacity - 1, old - 1, -1))
        return self._free.pop()

    def max_adapter_bytes(self) -> int:
        """The most tensor bytes one adapter for this base may hold: LoRA of full rank on every
        linear is at most twice the base's weights, plus room for a wide head. A weights file
        claiming more is refused from its header, before it is read."""
        params = sum(p.numel() for p in self.model.parameters())
        return 2 * 4 * params + (64 << 20)

    def load(self, path: str | Path | AdapterFiles, name: str | None = None) -> str:
        """Make an adapter resident (verified first); a no-op if it is already resident.

        Any failure, whatever its cause, raises AdapterFileError and leaves the model as it was:
        no slot taken, no bank changed, the previous version (if any) still serving.
        """
        files = path if isinstance(path, AdapterFiles) else read_adapter(
            path, max_weight_bytes=self.max_adapter_bytes())
        name = name or files.name
        with self._lock:
            current = self.tasks.get(name)
            if current is not None and current.digest == files.digest:
                return name
            resident, pairs = self._prepare(files, name)
            slot = self._take_slot()
            try:
                for module in pairs:
                    if module not in self.banks:
                        self.banks[module] = wrap(self.model, module, self.router)
                for module, (a, b, scale) in pairs.items():
                    self.banks[module].set_slot(slot, a, b, scale, self.capacity)
            except BaseException:
                for bank in self.banks.values():
                    bank.clear_slot(slot)
                self._free.append(slot)
                raise
            resident.slot = slot
            self.tasks[name] = resident  # the swap: new requests see the new adapter from here
            if current is not None:
                self._retire(current)
        return name

    def check(self, files: AdapterFiles) -> None:
        """Everything a load checks, without loading: AdapterFileError if it would be refused."""
        self._prepare(files, files.name)

    def _prepare(self, files: AdapterFiles, name: str) -> tuple[ResidentTask, dict]:
        """Everything a load computes from the files before it touches a slot."""
        try:
            return self._resident(files, name)
        except AdapterFileError:
            raise
        except Exception as e:  # a fault of the files no check names: still theirs alone
            raise AdapterFileError(f"adapter {files.path} refused: {type(e).__name__}: {e}; "
                                   "re-export the adapter. Nothing was loaded from it") from None

    def _resident(self, files: AdapterFiles, name: str) -> tuple[ResidentTask, dict]:
        check_against_base(files, self.model, self.fingerprint)
        spec = files.spec
        hidden = self.model.config.hidden_size if hasattr(self.model.config, "hidden_size") \
            else self.model.config.dim
        pairs = {m: (a, b, files.scale(m)) for m, (a, b) in files.lora_pairs().items()}
        w, bias = files.head()
        dense = files.dense_override(self.dense_name)
        if dense is not None:
            if tuple(dense[0].shape) != (hidden, hidden) or tuple(dense[1].shape) != (hidden,):
                raise AdapterFileError(f"adapter {files.path} refused: its {self.dense_name} is "
                                       f"{tuple(dense[0].shape)} but this base needs ({hidden}, "
                                       f"{hidden}); use the backbone it was trained on")
            dense = (dense[0].float(), dense[1].float())
        resident = ResidentTask(
            name=name, slot=-1, kind=spec.kind, labels=list(spec.labels), pair=spec.is_pair,
            max_length=spec.max_length, head_weight=w.float(),
            head_bias=None if bias is None else bias.float(), dense=dense, path=files.path,
            nbytes=files.nbytes, digest=files.digest, spec=spec, impl=kind_of(spec))
        return resident, pairs

    def slot_usage(self) -> tuple[int, int]:
        """(slots holding an adapter, slots allocated); slot 0 ("no adapter") is not counted."""
        with self._lock:
            return self.capacity - 1 - len(self._free), self.capacity - 1

    def replace(self, name: str, path: str | Path | AdapterFiles) -> str:
        """Swap a resident task to a new adapter version; requests see the old or the new one.

        The new files are verified before anything changes: if they are refused, the old
        adapter keeps serving.
        """
        with self._lock:
            if name not in self.tasks:
                raise UnknownTaskError(f"task {name!r} is not loaded, so there is nothing to "
                                       f"replace; loaded: {sorted(self.tasks)}. Use load() instead")
        return self.load(path, name=name)

    def _retire(self, task: ResidentTask) -> None:
        """Free a slot once no request still runs on it (called with the lock held)."""
        task.retired = True
        if task.users == 0:
            for bank in self.banks.values():
                bank.clear_slot(task.slot)
            self._free.append(task.slot)

    def unload(self, name: str) -> None:
        """Remove an adapter; requests already running on it finish with it."""
        with self._lock:
            task = self.tasks.pop(name, None)
            if task is None:
                raise UnknownTaskError(f"task {name!r} is not loaded; loaded: {sorted(self.tasks)}")
            self._retire(task)

    def slot_bytes(self) -> int:
        """Memory one resident adapter takes in the banks (all banks in use, padded rank)."""
        total = 0
        for bank in self.banks.values():
            a, b = bank._banks
            if a.shape[0]:
                total += a[0].nbytes + b[0].nbytes
        return total

    def resident_bytes(self) -> int:
        """Bank memory reserved for all slots, plus every resident task's head."""
        banks = sum(b._banks[0].nbytes + b._banks[1].nbytes for b in self.banks.values())
        heads = sum(t.head_weight.nbytes + (t.dense[0].nbytes if t.dense else 0)
                    for t in self.tasks.values())
        return banks + heads

    # -- inference ------------------------------------------------------------------------------

    def encode(self, task: ResidentTask, item: TextInput) -> list[Row]:
        """One input's model rows for a leased task (a long QA context gives several windows);
        a DataError (not naming the task) says what is wrong with the input."""
        return task.impl.encode(task.spec, self.tokenizer, item)

    @torch.inference_mode()
    def forward(self, ids: list[list[int]], tasks: list[ResidentTask]) -> list[torch.Tensor]:
        """Raw outputs for token ids, each row through its own (leased) task's adapter and head:
        [n_outputs] for sequence kinds, [tokens, n_outputs] for token-level kinds."""
        input_ids, mask = collate(ids, self.tokenizer.pad_token_id or 0)
        low = self.precision == "bf16"
        with self.router.route([t.slot for t in tasks]), \
                torch.autocast("cpu", dtype=torch.bfloat16, enabled=low):
            hidden = encoder.encoder_hidden(self.arch, self.model, input_ids, mask,  # [B, T, hidden]
                                          self.tokenizer.sep_token_id).float()
            cls = hidden[:, 0]
            if any(t.spec.is_sequence for t in tasks):
                dense = encoder.dense_module(self.arch, self.model)
                shared = encoder.dense_activation(self.arch, dense(cls).float())
        out: list[torch.Tensor] = [None] * len(tasks)  # type: ignore[list-item]
        # grouped by resident version, not by name: a batch may hold rows leased before and
        # after a replace of the same task, and each must get its own version's head
        groups: dict[int, list[int]] = {}
        for row, t in enumerate(tasks):
            groups.setdefault(id(t), []).append(row)
        for rows in groups.values():  # heads are small: one matmul per task in the batch
            t = tasks[rows[0]]
            if t.spec.is_sequence:
                feats = shared[rows]
                if t.dense is not None:
                    w, b = t.dense
                    feats = encoder.dense_activation(self.arch, cls[rows] @ w.T + b)
            else:
                feats = hidden[rows]  # token-level heads read every position
            logits = feats @ t.head_weight.T
            if t.head_bias is not None:
                logits = logits + t.head_bias
            for i, row in enumerate(rows):
                out[row] = logits[i] if t.spec.is_sequence else logits[i, : len(ids[row])]
        return out

    def logits_mixed(self, requests: list[tuple[str, TextInput]],
                     batch_size: int = 64) -> list[torch.Tensor | list[torch.Tensor]]:
        """Raw outputs per request, in order; one base pass per batch whatever the task mix.

        A sequence-kind request gives [n_outputs]; a NER request [tokens, n_labels]; a QA
        request [tokens, 2] (start, end), or a list of those when its context needed several
        windows.
        """
        return [outs[0] if len(outs) == 1 else outs for _, _, outs in self._run(requests, batch_size)]

    def acquire(self, name: str) -> ResidentTask:
        """Lease a resident task's current version: its slot stays valid until `release`.

        A replace or unload meanwhile retires the version; its slot is freed on the last release.
        """
        with self._lock:
            task = self._task(name)
            task.users += 1
            return task

    @contextlib.contextmanager
    def paused(self):
        """Hold the engine for the block: other threads' loads, unloads and batches wait at
        their next step (the holding thread itself may still call in)."""
        with self._lock:
            yield

    def release(self, task: ResidentTask) -> None:
        """End one lease taken by `acquire`."""
        with self._lock:
            task.users -= 1
            if task.retired and task.users == 0:
                self._retire(task)

    def _run(self, requests: list[tuple[str, TextInput]], batch_size: int = 64
             ) -> list[tuple[ResidentTask, list[Row], list[torch.Tensor]]]:
        """(task version used, model inputs, raw output per input) per request, in order."""
        with self._lock:  # lease every task this call uses: each row sees one adapter version
            resolved = [(self._task(name), item) for name, item in requests]
            leased = list({id(t): t for t, _ in resolved}.values())
            for t in leased:
                t.users += 1
        try:
            encoded = [(t, self._encode_named(t, i, item)) for i, (t, item) in enumerate(resolved)]
            flat = [(r, j) for r, (_, rows) in enumerate(encoded) for j in range(len(rows))]
            flat.sort(key=lambda rj: len(encoded[rj[0]][1][rj[1]].ids))
            outs: list[list] = [[None] * len(rows) for _, rows in encoded]
            for start in range(0, len(flat), batch_size):
                chunk = flat[start : start + batch_size]
                result = self.forward([encoded[r][1][j].ids for r, j in chunk],
                                       [encoded[r][0] for r, _ in chunk])
                for (r, j), row in zip(chunk, result):
                    outs[r][j] = row
            return [(t, rows, o) for (t, rows), o in zip(encoded, outs)]
        finally:
            for t in leased:
                self.release(t)

    def _encode_named(self, task: ResidentTask, index: int, item: TextInput) -> list[Row]:
        try:
            return self.encode(task, item)
        except DataError as e:
            raise DataError(f"task {task.name!r}: input {index}: {e}") from None

    def run_ids(self, name: str, ids: list[list[int]], batch_size: int = 64) -> list[torch.Tensor]:
        """Raw outputs for already tokenised rows of one task (evaluation), in order."""
        task = self.acquire(name)
        try:
            order = sorted(range(len(ids)), key=lambda i: len(ids[i]))
            out: list = [None] * len(ids)
            for start in range(0, len(order), batch_size):
                idx = order[start : start + batch_size]
                for i, row in zip(idx, self.forward([ids[i] for i in idx], [task] * len(idx))):
                    out[i] = row
            return out
        finally:
            self.release(task)

    def _task(self, name: str) -> ResidentTask:
        task = self.tasks.get(name)
        if task is None:
            raise UnknownTaskError(f"task {name!r} is not loaded; loaded: {sorted(self.tasks)}")
        return task

    def predict_mixed(self, requests: list[tuple[str, TextInput]]) -> list[dict]:
        """Predictions for (task, input) pairs of any tasks, in input order."""
        out = []
        for (name, item), (task, rows, outs) in zip(requests, self._run(requests)):
            out.append({"task": name, **task.impl.decode(task.spec, rows, outs, item)})
        return out

    def predict(self, task: str, inputs: list[TextInput]) -> list[dict]:
        """Predictions for one task's inputs, in order."""
        return [{k: v for k, v in p.items() if k != "task"}
                for p in self.predict_mixed([(task, x) for x in inputs])]

    def logits(self, task: str, inputs: list[TextInput]) -> torch.Tensor:
        """Raw outputs [n, n_outputs] for one sequence-kind task's inputs."""
        return torch.stack(self.logits_mixed([(task, x) for x in inputs]))
