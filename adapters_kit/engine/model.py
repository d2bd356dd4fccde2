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
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import torch

from ..adapters.store import AdapterFiles, read_adapter
from ..backbones import HEAD_DENSE_PATH, Backbone, encoder
from ..backbones.quantize import Quantization
from ..devices import engine_precision, resolve_device
from ..errors import DataError, UnknownTaskError
from ..tasks.kinds import Row
from ..tasks.reading import collate
from . import rows as bank_rows
from .admit import Pairs, admit
from .base import load_base
from .batching import TextInput, plan_chunks
from .heads import head_outputs
from .lora_bank import LoraBankLinear, Router, rank_bucket
from .slots import ResidentTask, SlotTable

__all__ = ["PRECISIONS", "MultiTaskModel", "ResidentTask", "TextInput", "plan_chunks"]


PRECISIONS = {"fp32", "bf16", "auto"}


class MultiTaskModel:
    """A shared base with a bank of LoRA adapters and one head per task.

    `device`: `auto` (a GPU when one is visible, else the CPU; the choice is logged), `cpu`,
    `cuda` or `cuda:N`. The base, the banks and the heads live there, every batch is built
    there, and outputs come back on the CPU. `precision`: `fp32`, `bf16`, or `auto` (bf16 on
    a GPU that runs it natively, else fp32)."""

    def __init__(self, backbone: str | Path = "embedded-distilbert", capacity: int = 8,
                 precision: str = "fp32", device: str | torch.device = "auto",
                 quantize: str | Quantization | None = None, double_quant: bool = False) -> None:
        if precision not in PRECISIONS:
            raise ValueError(f"precision {precision!r} is not one of {sorted(PRECISIONS)}; fp32 "
                             "matches plain peft exactly, bf16 is faster on CPUs with bf16 units "
                             "and on recent GPUs, auto picks per device")
        device = resolve_device(device)
        # bf16: the base's matmuls (and the LoRA factors') run under bf16 autocast; weights,
        # heads, norms and the returned outputs stay fp32.
        self.precision = engine_precision(precision, device)
        # quantize: a bitsandbytes base ("8bit" or "4bit"; see engine/quantized_bank.py)
        self.quantization = Quantization.of(quantize, double_quant)
        if self.quantization is not None and self.precision != "fp32":
            raise ValueError(f"precision {precision!r} with quantize={self.quantization.mode!r}: a "
                             "quantized base's kernels choose their own compute type; use fp32")
        self.backbone = Backbone.resolve(backbone)
        self.arch = self.backbone.arch
        # the fingerprint is taken of the CPU copy (no device round trip)
        self.model, self.fingerprint, numel = load_base(self.backbone, self.quantization)
        self.model.to(device)  # bitsandbytes quantizes a 4-bit layer's weights as they move
        self._max_adapter_bytes = 2 * 4 * numel + (64 << 20)
        self.tokenizer = self.backbone.tokenizer()
        self.router = Router()
        self.dense_name = HEAD_DENSE_PATH[self.arch]
        # Only linears some resident adapter targets are wrapped (on its first load): the others
        # stay plain nn.Linear and cost nothing per forward.
        self.banks: dict[str, LoraBankLinear] = {}
        self.tasks: dict[str, ResidentTask] = {}
        self.slots = SlotTable(capacity)
        self._lock = self.slots.lock
        self._head_bytes = 0  # heads of every version holding a slot, retired ones included

    @classmethod
    def from_pretrained(cls, *adapters: str | Path, backbone: str | Path | None = None,
                        **kwargs) -> MultiTaskModel:
        """An engine serving `adapters` (directories or store URLs such as
        `s3://bucket/prefix/sst2`), on the base they name (or `backbone`); `kwargs` as for
        the constructor."""
        from ..adapters import load_adapter

        files = [load_adapter(a) for a in adapters]
        if backbone is None and not files:
            raise ValueError("from_pretrained needs an adapter location or a backbone")
        model = cls(backbone or files[0].task["backbone"]["name"], **kwargs)
        for f in files:
            model.load(f)
        return model

    @property
    def capacity(self) -> int:
        """Slots (ids) before the table grows; slot 0 means "no adapter"."""
        return self.slots.capacity

    @property
    def device(self) -> torch.device:
        """Where the base's weights, and so every tensor of a pass, live."""
        return self.model.get_input_embeddings().weight.device

    def to(self, device: str | torch.device) -> MultiTaskModel:
        """Move the base, every bank and every resident head to `device` (a setting as for
        `__init__`). Loads and unloads wait meanwhile; call it between passes, not during one."""
        device = resolve_device(device)
        with self._lock:
            self.model.to(device)  # the banks follow (LoraBankLinear._apply)
            for task in {id(t): t for t in self.slots.versions()}.values():
                task.head_weight = self._here(task.head_weight)
                if task.head_bias is not None:
                    task.head_bias = self._here(task.head_bias)
                if task.dense is not None:
                    task.dense = (self._here(task.dense[0]), self._here(task.dense[1]))
        return self

    def max_adapter_bytes(self) -> int:
        """The most tensor bytes one adapter for this base may hold: LoRA of full rank on every
        linear is at most twice the base's weights, plus room for a wide head. A weights file
        claiming more is refused from its header, before it is read."""
        return self._max_adapter_bytes

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
            rank = max((a.shape[0] for a, _, _ in pairs.values()), default=1)
            rows = self.slots.take(resident, rank_bucket(rank))
            try:
                bank_rows.write(self.banks, self.model, self.router, resident.place, pairs, rows)
            except BaseException:
                self._free(resident, counted=False)
                raise
            self._head_bytes += resident.head_bytes
            self.tasks[name] = resident  # the swap: new requests see the new adapter from here
            if current is not None:
                self._retire(current)
        return name

    def _prepare(self, files: AdapterFiles, name: str) -> tuple[ResidentTask, Pairs]:
        """Everything a load computes from the files before it touches a slot."""
        return admit(files, name, self.model, self.fingerprint, self.quantization,
                     self.dense_name, self.device)

    def check(self, files: AdapterFiles) -> None:
        """Everything a load checks, without loading: AdapterFileError if it would be refused."""
        self._prepare(files, files.name)

    def _here(self, t: torch.Tensor) -> torch.Tensor:
        """A head tensor from the files, fp32 on the base's device."""
        return t.to(device=self.device, dtype=torch.float32)

    def slot_usage(self) -> tuple[int, int]:
        """(slots holding an adapter, slots allocated); slot 0 ("no adapter") is not counted."""
        with self._lock:
            return self.slots.used(), self.capacity - 1

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
        if self.slots.retire(task):
            self._free(task)

    def _free(self, task: ResidentTask, counted: bool = True) -> None:
        """Clear a version's rows in the banks and give its slot back (lock held); `counted`:
        its head is in `resident_bytes` (False for a load refused halfway)."""
        bank_rows.clear(self.banks, task.place, bucket_empty=self.slots.free(task) == 0)
        if counted:
            self._head_bytes -= task.head_bytes

    def unload(self, name: str) -> None:
        """Remove an adapter; requests already running on it finish with it."""
        with self._lock:
            task = self.tasks.pop(name, None)
            if task is None:
                raise UnknownTaskError(f"task {name!r} is not loaded; loaded: {sorted(self.tasks)}")
            self._retire(task)

    def slot_bytes(self, rank: int = 8) -> int:
        """Bank memory one resident adapter of rank `rank` takes (every bank in use, its rank
        padded to its bucket)."""
        return bank_rows.slot_bytes(self.banks, rank)

    def resident_bytes(self, trimmed: bool = False) -> int:
        """Bytes the engine holds for its adapters: every allocated bank row, padding and free
        rows included, plus the head of every version holding a slot. `trimmed`: what `trim`
        would leave (rows in use only)."""
        with self._lock:
            return bank_rows.nbytes(self.banks, self.slots, trimmed) + self._head_bytes

    def trim(self) -> int:
        """Give back bank rows no adapter holds: unleased adapters move down into the holes,
        each bucket shrinks to the rows in use. Returns the bytes now held."""
        with self._lock:
            bank_rows.compact(self.banks, self.slots)
            return self.resident_bytes()

    # -- inference ------------------------------------------------------------------------------

    def encode(self, task: ResidentTask, item: TextInput) -> list[Row]:
        """One input's model rows for a leased task (a long QA context gives several windows);
        a DataError (not naming the task) says what is wrong with the input."""
        return task.impl.encode(task.spec, self.tokenizer, item)

    def route(self, tasks: list[ResidentTask]) -> contextlib.AbstractContextManager:
        """Route row i of the next pass on this thread through `tasks[i]`'s adapter: what a
        switch of adapter costs (`forward` runs inside it; rows of one adapter next to each
        other run fastest)."""
        return self.router.route([t.place for t in tasks], self.device)

    @torch.inference_mode()
    def forward(self, ids: list[list[int]], tasks: list[ResidentTask]) -> list[torch.Tensor]:
        """Raw outputs for token ids, each row through its own (leased) task's adapter and head:
        [n_outputs] for sequence kinds, [tokens, n_outputs] for token-level kinds; on the CPU,
        where decoding and metrics read them (one copy per batch from a GPU)."""
        # rows of one adapter version next to each other: each adapter's LoRA work and head
        # run on a view of its rows (a replace mid-batch gives two versions two places)
        order = sorted(range(len(tasks)), key=lambda i: tasks[i].place)
        ids = [ids[i] for i in order]
        tasks = [tasks[i] for i in order]
        device = self.device
        input_ids, mask = collate(ids, self.tokenizer.pad_token_id or 0, device)  # [B, T] each
        low = self.precision == "bf16"
        with self.router.route([t.place for t in tasks], device), \
                torch.autocast(device.type, dtype=torch.bfloat16, enabled=low):
            hidden = encoder.encoder_hidden(self.arch, self.model, input_ids, mask,  # [B, T, hidden]
                                          self.tokenizer.sep_token_id).float()
            shared = None  # [B, hidden]: the base's head dense over the first token, activated
            if any(t.spec.is_sequence for t in tasks):
                dense = encoder.dense_module(self.arch, self.model)
                shared = encoder.dense_activation(self.arch, dense(hidden[:, 0]).float())
        return head_outputs(self.arch, tasks, hidden, shared, [len(x) for x in ids], order)

    def run_rows(self, ids: list[list[int]], tasks: list[ResidentTask], max_rows: int | None = 64,
                 max_tokens: int | None = None) -> list[torch.Tensor]:
        """`forward` over any number of rows of leased tasks, in passes cut by `plan_chunks`;
        outputs in input order."""
        out: list = [None] * len(ids)
        for chunk in plan_chunks([len(x) for x in ids], max_rows, max_tokens):
            for i, row in zip(chunk, self.forward([ids[i] for i in chunk], [tasks[i] for i in chunk])):
                out[i] = row
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
            self.slots.acquire(task)
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
            if self.slots.release(task):
                self._free(task)

    @contextmanager
    def leased(self, names: list[str]) -> Iterator[list[ResidentTask]]:
        """The current version of each named task, all leased together for the block (so each
        row sees one adapter version), released after it."""
        with self._lock:
            tasks = [self._task(name) for name in names]
            distinct = list({id(t): t for t in tasks}.values())
            for t in distinct:
                self.slots.acquire(t)
        try:
            yield tasks
        finally:
            for t in distinct:
                self.release(t)

    def _run(self, requests: list[tuple[str, TextInput]], batch_size: int = 64
             ) -> list[tuple[ResidentTask, list[Row], list[torch.Tensor]]]:
        """(task version used, model inputs, raw output per input) per request, in order."""
        with self.leased([name for name, _ in requests]) as tasks:
            encoded = [self._encode_named(t, i, item)
                       for i, (t, (_, item)) in enumerate(zip(tasks, requests))]
            flat = [(r, j) for r, rows in enumerate(encoded) for j in range(len(rows))]
            outs = self.run_rows([encoded[r][j].ids for r, j in flat], [tasks[r] for r, _ in flat],
                                 batch_size)
            per_request: list[list] = [[None] * len(rows) for rows in encoded]
            for (r, j), row in zip(flat, outs):
                per_request[r][j] = row
            return list(zip(tasks, encoded, per_request))

    def _encode_named(self, task: ResidentTask, index: int, item: TextInput) -> list[Row]:
        try:
            return self.encode(task, item)
        except DataError as e:
            raise DataError(f"task {task.name!r}: input {index}: {e}") from None

    def run_ids(self, name: str, ids: list[list[int]], batch_size: int = 64) -> list[torch.Tensor]:
        """Raw outputs for already tokenised rows of one task (evaluation), in order."""
        with self.leased([name]) as (task,):
            return self.run_rows(ids, [task] * len(ids), batch_size)

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
