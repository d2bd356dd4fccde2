"""Training one task adapter: LoRA + task head on a frozen backbone, with peft."""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import random
import shutil
import time
import warnings
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

from ..adapters.fsutil import atomic_directory
from ..adapters.store import WEIGHTS, save_adapter
from ..backbones import DEFAULT_BACKBONE, Backbone, encoder
from ..data import collate, length_grouped_batches
from ..errors import TrainingError, TrainingInterrupted
from ..kinds import DEFAULT_KIND, Kind, kind_of
from ..kinds.quality import QualityWarning, quality_warnings
from ..tasks import TaskSpec, get_task
from .distributed import Processes
from .plots import confusion_png, curves_png


@dataclass
class TrainConfig:
    """How to train. Fields left as None take the task card's defaults."""

    backbone: str = DEFAULT_BACKBONE
    epochs: float | None = None
    learning_rate: float | None = None
    batch_size: int | None = None
    rank: int | None = None
    lora_alpha: int | None = None
    lora_dropout: float | None = None
    targets: str | None = None
    """LoRA target preset: `qv`, `attention` or `all-linear`."""
    max_length: int | None = None
    head: str = "lora"
    """`lora`: the head's dense layer stays frozen and gets a LoRA update (small files).
    `full`: the dense layer is trained and saved whole (the naive design, for comparison)."""
    dropout: float | None = None
    """Override every dropout of the backbone and head during training (None keeps the model's)."""
    max_train_examples: int | None = None
    class_weights: str | dict[str, float] | None = None
    """Overrides the card's `class_weights`: `balanced`, `none`, or a dict label -> weight."""
    seed: int = 0
    evals_per_epoch: int = 2
    patience: int = 4
    """Stop after this many evaluations without a better dev metric."""
    warmup_ratio: float = 0.06
    weight_decay: float = 0.01
    precision: str = "auto"
    """Training matmul precision: `fp32`, `bf16` (autocast; weights and optimizer stay fp32), or
    `auto`: bf16 where the hardware runs it natively (CPUs with AVX512-BF16/AMX, recent GPUs).
    Evaluation and saved weights are always fp32."""
    max_seconds: float | None = None
    """Stop training (keeping the best checkpoint so far) after this many seconds."""
    threads: int | None = None
    progress: bool = True
    resume: bool = True
    baseline: bool = True
    overwrite: bool = False

    def resolved(self, spec: TaskSpec) -> dict:
        keys = ("epochs", "learning_rate", "batch_size", "rank", "lora_alpha", "lora_dropout",
                "targets", "max_length")
        out = asdict(self)
        for k in keys:
            if out[k] is None:
                out[k] = getattr(spec, k)
        if self.class_weights is None:
            out["class_weights"] = spec.class_weights
        elif self.class_weights == "none":
            out["class_weights"] = None
        if out["head"] not in ("lora", "full"):
            raise ValueError(f"head {out['head']!r} must be 'lora' or 'full'")
        if out["threads"] is not None and out["threads"] < 1:
            raise ValueError(f"threads {out['threads']} must be at least 1 (or None for all cores)")
        return out


@dataclass
class TrainResult:
    path: Path
    metrics: dict[str, float]
    baseline: dict[str, float]
    train_seconds: float
    examples_seen: int
    adapter_bytes: int
    history: dict = field(default_factory=dict)
    report: dict = field(default_factory=dict)
    """The kept checkpoint's per-class scores and confusion matrix on dev (see `class_report`)."""
    warnings: list[str] = field(default_factory=list)
    """Never-predicted classes, a score below the baseline: also raised as `QualityWarning`s."""
    class_weights: dict[str, float] | None = None

    @property
    def examples_per_second(self) -> float:
        return self.examples_seen / max(self.train_seconds, 1e-9)

    def to_dict(self) -> dict:
        return {"path": str(self.path), "metrics": self.metrics, "baseline": self.baseline,
                "train_seconds": round(self.train_seconds, 2), "examples_seen": self.examples_seen,
                "examples_per_second": round(self.examples_per_second, 1),
                "adapter_bytes": self.adapter_bytes, "class_weights": self.class_weights,
                "report": self.report, "warnings": self.warnings}


def lora_config(arch: str, num_outputs: int, cfg: dict, kind: str | Kind = DEFAULT_KIND):
    """The peft LoraConfig for one of the two head designs (see TrainConfig.head): the kind's."""
    return (kind if isinstance(kind, Kind) else kind_of(kind)).lora_config(arch, num_outputs, cfg)


def _autocast(precision: str):
    """The autocast context for training steps."""
    if precision not in ("auto", "fp32", "bf16"):
        raise ValueError(f"precision {precision!r} must be 'auto', 'fp32' or 'bf16'")
    if precision == "auto":
        try:
            native = bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
        except (AttributeError, RuntimeError):
            native = False
        precision = "bf16" if native else "fp32"
    if precision == "bf16":
        return precision, lambda: torch.autocast("cpu", dtype=torch.bfloat16)
    return precision, contextlib.nullcontext


def _seed_everything(seed: int) -> None:
    random.seed(seed)
    torch.manual_seed(seed)
    try:
        import numpy as np

        np.random.seed(seed)
    except ImportError:  # pragma: no cover
        pass


def _trainable(model: torch.nn.Module) -> dict[str, torch.nn.Parameter]:
    params = {n: p for n, p in model.named_parameters() if p.requires_grad}
    wrong = [n for n in params if ".lora_" not in n and ".modules_to_save." not in n]
    # The naming rule decides what trains: LoRA factors and the saved head modules, nothing else.
    if wrong:
        raise TrainingError(f"base weights would be trained: {wrong[:5]}"
                            + (f" and {len(wrong) - 5} more" if len(wrong) > 5 else "")
                            + "; only LoRA factors and the head modules may require gradients. "
                            "Freeze the base (requires_grad_(False)) before get_peft_model, or "
                            "list such a module in the LoRA config's modules_to_save")
    return params


@torch.no_grad()
def predict_outputs(model: torch.nn.Module, kind: Kind, ids: list[list[int]], pad_id: int,
                    batch_size: int = 128, sep_id: int | None = None) -> list[torch.Tensor]:
    """Raw outputs per row in input order ([n_outputs], or [tokens, n_outputs] for token-level
    kinds, padding cut off), evaluated in length-sorted batches."""
    was_training = model.training
    model.eval()
    order = sorted(range(len(ids)), key=lambda i: len(ids[i]))
    out: list = [None] * len(ids)
    for s in range(0, len(order), batch_size):
        idx = order[s : s + batch_size]
        input_ids, mask = collate([ids[i] for i in idx], pad_id)
        arch = model.config.model_type
        logits = kind.outputs(model(**encoder.model_inputs(arch, input_ids, mask, sep_id)))
        for row, i in enumerate(idx):
            out[i] = logits[row, : len(ids[i])] if kind.per_token else logits[row]
    model.train(was_training)
    return out


def predict_logits(model: torch.nn.Module, ids: list[list[int]], pad_id: int,
                   batch_size: int = 128) -> torch.Tensor:
    """Raw outputs [n, n_outputs] of a sequence-kind model, in input order."""
    return torch.stack(predict_outputs(model, kind_of(DEFAULT_KIND), ids, pad_id, batch_size))


BEST = "best.safetensors"
PROGRESS_SECONDS = 10.0
"""Least seconds between two `on_progress` step events."""


class _Checkpoint:
    """Resume state: trainable tensors, optimizer moments, RNG and the best state so far.

    Each save replaces the whole directory atomically, so the best state is written into
    every save: a save after an evaluation that did not improve must not drop it."""

    def __init__(self, directory: Path, key: str) -> None:
        self.dir, self.key = directory, key

    def save(self, params, optimizer, progress: dict, best: dict[str, torch.Tensor] | None) -> None:
        from safetensors.torch import save_file

        tensors = {f"param/{n}": p.detach().clone() for n, p in params.items()}
        for n, p in params.items():
            st = optimizer.state.get(p, {})
            for k in ("exp_avg", "exp_avg_sq"):
                if k in st:
                    tensors[f"opt/{k}/{n}"] = st[k]
            if "step" in st:
                tensors[f"opt/step/{n}"] = torch.as_tensor(st["step"], dtype=torch.float32).reshape(1)
        tensors["rng/torch"] = torch.get_rng_state()
        with atomic_directory(self.dir, overwrite=True) as tmp:
            save_file({k: v.contiguous() for k, v in tensors.items()}, str(tmp / "state.safetensors"))
            (tmp / "progress.json").write_text(json.dumps({"key": self.key, **progress}))
            if best is not None:
                save_file({k: v.contiguous() for k, v in best.items()}, str(tmp / BEST))

    def best(self) -> dict[str, torch.Tensor] | None:
        """The best adapter state saved with the checkpoint, if any."""
        from safetensors.torch import load_file

        path = self.dir / BEST
        return load_file(str(path)) if path.exists() else None

    def load(self, params, optimizer) -> dict | None:
        from safetensors.torch import load_file

        pfile = self.dir / "progress.json"
        if not pfile.exists():
            return None
        progress = json.loads(pfile.read_text())
        if progress.get("key") != self.key:
            return None  # a checkpoint of another configuration: start afresh
        tensors = load_file(str(self.dir / "state.safetensors"))
        with torch.no_grad():
            for n, p in params.items():
                p.copy_(tensors[f"param/{n}"])
                if f"opt/exp_avg/{n}" in tensors:
                    optimizer.state[p] = {
                        "step": tensors[f"opt/step/{n}"].reshape(()).clone(),
                        "exp_avg": tensors[f"opt/exp_avg/{n}"].clone(),
                        "exp_avg_sq": tensors[f"opt/exp_avg_sq/{n}"].clone(),
                    }
        torch.set_rng_state(tensors["rng/torch"])
        return progress

    def remove(self) -> None:
        shutil.rmtree(self.dir, ignore_errors=True)


def train(task: str | TaskSpec, out_dir: str | Path, config: TrainConfig | None = None,
          *, stop_after_step: int | None = None,
          on_progress: Callable[[dict], None] | None = None) -> TrainResult:
    """Train a LoRA adapter and its head for `task`; write the adapter directory to `out_dir`.

    `stop_after_step` ends the run early without saving an adapter: it raises
    `TrainingInterrupted` (with the step and the checkpoint path) as an interruption would end
    the run, and a later call with the same task and `out_dir` resumes from that checkpoint.

    `on_progress` receives plain dicts on the main process: `{"event": "start", ...}`, then
    `"step"` (at most every `PROGRESS_SECONDS`), `"eval"` after each evaluation, and `"done"`.

    Under `accelerate launch` with several processes this runs as DDP (see `distributed`):
    the global batch stays `batch_size`, every process returns the same metrics, and only the
    main process writes the checkpoints and the adapter.
    """
    from peft import get_peft_model, get_peft_model_state_dict
    from tqdm.auto import tqdm

    spec = task if isinstance(task, TaskSpec) else get_task(task)
    config = config or TrainConfig()
    cfg = config.resolved(spec)
    out_dir = Path(out_dir)
    if out_dir.exists() and not config.overwrite:
        raise FileExistsError(f"{out_dir} already exists; choose another --out or pass "
                              "--overwrite to replace it")
    if config.threads:
        torch.set_num_threads(config.threads)
    precision, autocast = _autocast(config.precision)
    cfg["precision"] = precision
    if cfg["class_weights"] != spec.class_weights:  # validated as a card's would be
        spec = TaskSpec(**{**spec.to_dict(), "class_weights": cfg["class_weights"]})

    procs = Processes()
    _seed_everything(config.seed)
    kind = kind_of(spec)
    with procs.main_first():  # the main process converts and caches the base, then the others read it
        backbone = Backbone.resolve(config.backbone)
        tokenizer = backbone.tokenizer()
        train_split, dev_split = kind.splits(spec, seed=config.seed,
                                             max_train=config.max_train_examples)
        model = kind.load_model(backbone, spec.num_outputs)
    base_fp = kind.base_fingerprint(backbone, model)
    # Seeded again: building a base's head folder the first time draws random numbers, and the
    # LoRA init must not depend on whether that cache was warm (nor on which process built it).
    _seed_everything(config.seed)
    lora = kind.lora_config(backbone.arch, spec.num_outputs, cfg)
    with warnings.catch_warnings():  # peft calls a transformers method deprecated in v5
        warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*")
        model = get_peft_model(model, lora)
    if config.dropout is not None:
        for module in model.modules():
            if isinstance(module, torch.nn.Dropout):
                module.p = config.dropout
    model.train()
    params = _trainable(model)

    clipped = list(params.values())
    pad = tokenizer.pad_token_id or 0
    sep = tokenizer.sep_token_id
    if cfg["max_length"] != spec.max_length:
        spec = TaskSpec(**{**spec.to_dict(), "max_length": cfg["max_length"]})
    train_feats = kind.featurize(spec, tokenizer, train_split, training=True)
    dev_feats = kind.featurize(spec, tokenizer, dev_split)
    train_ids, dev_ids = train_feats.ids, dev_feats.ids
    loss_weight = kind.loss_weights(spec, train_split)  # [n_labels] or None
    weights_used = None if loss_weight is None else dict(zip(spec.labels, loss_weight.tolist()))
    emit = on_progress if on_progress is not None and procs.is_main else (lambda event: None)
    lengths = [len(x) for x in train_ids]
    bs = cfg["batch_size"]
    steps_per_epoch = math.ceil(len(train_ids) / bs)
    total_steps = max(1, math.ceil(cfg["epochs"] * steps_per_epoch))
    eval_every = max(1, steps_per_epoch // max(1, config.evals_per_epoch))
    decay = [p for n, p in params.items() if p.dim() > 1]
    no_decay = [p for n, p in params.items() if p.dim() <= 1]
    optimizer = torch.optim.AdamW([{"params": decay, "weight_decay": config.weight_decay},
                                   {"params": no_decay, "weight_decay": 0.0}],
                                  lr=cfg["learning_rate"])
    warmup = int(config.warmup_ratio * total_steps)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: min(
        (s + 1) / max(1, warmup), max(0.0, (total_steps - s) / max(1, total_steps - warmup))))

    key_src = {k: v for k, v in cfg.items() if k not in ("progress", "resume", "overwrite",
                                                         "threads", "baseline", "max_seconds")}
    key = hashlib.sha256(json.dumps([key_src, spec.to_dict(), base_fp, len(train_ids)],
                                    sort_keys=True, default=str).encode()).hexdigest()
    ckpt = _Checkpoint(out_dir.parent / ".checkpoints" / out_dir.name, key)
    state = {"step": 0, "losses": [], "evals": [], "best": None, "best_step": None,
             "best_metrics": None,
             "bad_evals": 0, "seconds": 0.0, "seen": 0}
    best_state: dict[str, torch.Tensor] | None = None
    if config.resume:
        loaded = ckpt.load(params, optimizer)
        if loaded:
            state.update(loaded)
            with warnings.catch_warnings():  # fast-forwarding the schedule, not skipping a step
                warnings.filterwarnings("ignore", message=".*lr_scheduler.step.*")
                for _ in range(state["step"]):
                    schedule.step()
            best_state = ckpt.best()
    higher_is_better = spec.metric != "mse"
    stepper = procs.wrap(model)  # training steps go through DDP; evaluation and saving use `model`
    if procs.size > 1:  # each process its own dropout masks, as it has its own rows
        torch.manual_seed(config.seed * 1_000_003 + procs.rank * 1009 + state["step"])

    eval_cost = [0.0]  # seconds the last evaluation took: the time budget keeps room for one
    dev_outputs: list = [None, None]  # the last evaluation's outputs, the best one's

    def evaluate() -> dict[str, float]:
        t0 = time.perf_counter()
        outputs = procs.map_rows(lambda ids: predict_outputs(model, kind, ids, pad, sep_id=sep),
                                 dev_ids)
        metrics = kind.evaluate(spec, dev_split, dev_feats, outputs)
        eval_cost[0] = time.perf_counter() - t0
        dev_outputs[0] = outputs
        return metrics

    bar = tqdm(total=total_steps, initial=state["step"],
               disable=not (config.progress and procs.is_main), desc=f"train {spec.name}",
               unit="step", dynamic_ncols=True)
    started = time.perf_counter() - state["seconds"]
    stopped_early = False
    step = state["step"]
    emit({"event": "start", "task": spec.name, "step": step, "total_steps": total_steps,
          "train_rows": len(train_ids), "dev_rows": len(dev_ids), "metric": spec.metric,
          "class_weights": weights_used})
    last_emit = time.perf_counter()
    while step < total_steps and not stopped_early:
        epoch, offset = divmod(step, steps_per_epoch)
        batches = length_grouped_batches(lengths, bs, seed=config.seed * 1000 + epoch)
        for batch in batches[offset:]:
            rows, weight = procs.share(batch)
            input_ids, mask = collate([train_ids[i] for i in rows], pad)
            with autocast():
                logits = kind.outputs(stepper(**encoder.model_inputs(backbone.arch, input_ids, mask, sep)))
            loss = kind.loss(logits.float(), kind.batch_targets(train_feats, rows, input_ids.shape[1]),
                             loss_weight)
            if weight != 1.0:
                loss = loss * weight
            procs.backward(loss)
            torch.nn.utils.clip_grad_norm_(clipped, 1.0)
            optimizer.step()
            schedule.step()
            optimizer.zero_grad(set_to_none=True)
            step += 1
            state["seen"] += len(batch)
            loss_value = procs.mean(loss)
            state["losses"].append((step, loss_value))
            bar.update(1)
            if time.perf_counter() - last_emit >= PROGRESS_SECONDS:
                last_emit = time.perf_counter()
                emit({"event": "step", "step": step, "total_steps": total_steps,
                      "loss": round(loss_value, 5), "seconds": round(last_emit - started, 1)})
            over_time = config.max_seconds is not None and procs.any(
                time.perf_counter() - started + eval_cost[0] >= config.max_seconds)
            if step % eval_every == 0 or step == total_steps or over_time:
                metrics = evaluate()
                value = metrics[spec.metric]
                state["evals"].append((step, value))
                better = state["best"] is None or (
                    value > state["best"] if higher_is_better else value < state["best"])
                if better:
                    state.update(best=value, best_step=step, bad_evals=0, best_metrics=metrics)
                    best_state = {k: v.clone() for k, v in get_peft_model_state_dict(model).items()}
                    dev_outputs[1] = dev_outputs[0]
                else:
                    state["bad_evals"] += 1
                emit({"event": "eval", "step": step, "total_steps": total_steps,
                      "loss": round(loss_value, 5), "metrics": metrics, "best": state["best"],
                      "best_step": state["best_step"],
                      "seconds": round(time.perf_counter() - started, 1)})
                bar.set_postfix(loss=f"{loss_value:.3f}", **{spec.metric: f"{value:.4f}"})
                state["step"], state["seconds"] = step, time.perf_counter() - started
                if step < total_steps and procs.is_main:
                    ckpt.save(params, optimizer, state, best_state)
                if state["bad_evals"] >= config.patience or over_time:
                    stopped_early = True
            if stop_after_step is not None and step >= stop_after_step:
                bar.close()
                procs.wait()  # the main process's checkpoint is complete before any exits
                kept = ckpt.dir if (ckpt.dir / "progress.json").exists() else None
                raise TrainingInterrupted(f"stopped after step {step} (resume by training again)",
                                          step, kept)
            if stopped_early or step >= total_steps:
                break
    bar.close()
    train_seconds = time.perf_counter() - started

    if best_state is not None:
        from peft import set_peft_model_state_dict

        set_peft_model_state_dict(model, best_state)
    # The best state's dev metrics were computed when it was kept (evaluation is deterministic).
    final = state["best_metrics"]
    if final is None or dev_outputs[1] is None:  # nothing kept, or resumed: its outputs are gone
        metrics = evaluate()
        final = final or metrics
        dev_outputs[1] = dev_outputs[0]
    baseline = procs.from_main(kind.baseline(spec, train_split, dev_split)
                               if config.baseline and procs.is_main else {})
    report = kind.report(spec, dev_split, dev_feats, dev_outputs[1])
    train_counts = kind.label_counts(spec, train_split)
    notes = quality_warnings(spec, report, train_counts, final, baseline)
    if procs.is_main:
        for note in notes:
            warnings.warn(f"{spec.name}: {note}", QualityWarning, stacklevel=2)
    task_meta = {
        "task": spec.to_dict(),
        "backbone": {"name": backbone.name, "arch": backbone.arch, "fingerprint": base_fp,
                     "base_dir": str(backbone.path), "description": backbone.description},
        "metrics": final,
        "tfidf_baseline": baseline,
        "training": {**{k: v for k, v in cfg.items() if k not in ("progress", "overwrite")},
                     "train_examples": len(train_split), "dev_examples": len(dev_split),
                     "train_rows": len(train_ids), "skipped_examples":
                         len(getattr(train_split, "skipped", [])),
                     "steps": step, "best_step": state["best_step"],
                     "train_seconds": round(train_seconds, 2), "examples_seen": state["seen"],
                     "stopped_early": stopped_early, "processes": procs.size,
                     "class_weight_values": weights_used, "train_label_counts": train_counts},
        "history": {"evals": state["evals"]},
        "dev_report": report,
        "warnings": notes,
    }
    if procs.is_main:
        png = curves_png(state["losses"], state["evals"], spec.metric,
                         f"{spec.name} on {backbone.name}")
        extra = {"curves.png": png}
        if report.get("confusion_matrix"):
            extra["confusion.png"] = confusion_png(report["confusion_matrix"], report["labels"],
                                                   f"{spec.name}: dev, best step {state['best_step']}")
        save_adapter(out_dir, model, task_meta, overwrite=config.overwrite, extra_files=extra)
        ckpt.remove()
        with contextlib.suppress(OSError):
            ckpt.dir.parent.rmdir()  # only when no other task's checkpoint is in it
    procs.wait()  # the adapter is complete before any process returns its path
    emit({"event": "done", "step": step, "best_step": state["best_step"], "metrics": final,
          "path": str(out_dir), "seconds": round(train_seconds, 1)})
    path = out_dir
    nbytes = (path / WEIGHTS).stat().st_size + sum(
        (path / n).stat().st_size for n in ("adapter_config.json",))
    return TrainResult(path=path, metrics=final, baseline=baseline, train_seconds=train_seconds,
                       examples_seen=state["seen"], adapter_bytes=nbytes,
                       history={"evals": state["evals"], "best_step": state["best_step"],
                                "losses": state["losses"]},
                       report=report, warnings=notes, class_weights=weights_used)
