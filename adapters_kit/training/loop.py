"""Training one task adapter: LoRA + task head on a frozen backbone, with peft.

`train` is the recipe: resolve the config, read the data, set the model, optimizer and schedule
up, restore a checkpoint, fit, save. Each step lives in its own module beside this one."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

from ..backbones import Backbone
from ..backbones.quantize import Quantization
from ..devices import autocast, grad_scaler, keeps_thread_count
from ..tasks import TaskSpec, get_task
from ..tasks.kinds import kind_of
from .checkpoint import Checkpoint, run_key
from .config import ResolvedConfig, TrainConfig
from .data import load_data
from .distributed import Processes
from .evaluate import DevEvaluator, predict_logits, predict_outputs
from .fit import PROGRESS_SECONDS, EarlyStopping, Fit, FitState
from .qlora import quantized_base
from .save import TrainResult, save
from .setup import (
    Steps,
    lora_config,
    optimizer_for,
    schedule_for,
    seed_everything,
    trainable,
    with_lora,
)
from .teacher import Teacher, attach

__all__ = ["PROGRESS_SECONDS", "Prepared", "ResolvedConfig", "TrainConfig", "TrainResult", "lora_config",
           "predict_logits", "predict_outputs", "prepare", "resolve_job", "train"]


@keeps_thread_count
def train(task: str | TaskSpec, out_dir: str | Path, config: TrainConfig | None = None,
          *, stop_after_step: int | None = None,
          on_progress: Callable[[dict], None] | None = None,
          teacher: str | Path | Teacher | None = None) -> TrainResult:
    """Train a LoRA adapter and its head for `task`; write the adapter directory to `out_dir`.

    `stop_after_step` ends the run early without saving an adapter, raising
    `TrainingInterrupted` (it names the checkpoint; a later call resumes from it).

    `on_progress` receives plain dicts on the main process: `{"event": "start", ...}`, then
    `"step"` (at most every `PROGRESS_SECONDS`), `"eval"` after each evaluation, and `"done"`.

    `config.device` says where (`auto`: a GPU when one is visible); the device used is in the
    `start` event, the result and `task.json`.

    `teacher` (an adapter directory, or a `Teacher` with its temperature, alpha and unlabelled
    text): task distillation, the loss mixing the hard labels with that adapter's soft outputs
    (see `teacher`); `task.json` records the teacher.

    Under `accelerate launch` with several processes this runs as DDP (see `distributed`):
    the global batch stays `batch_size`, every process returns the same metrics, and only the
    main process writes the checkpoints and the adapter.
    """
    run, out_dir = resolve_job(task, out_dir, config)
    if run.threads:
        torch.set_num_threads(run.threads)
    procs = Processes(torch.device(run.device))
    emit = on_progress if on_progress is not None and procs.is_main else (lambda event: None)
    job = prepare(run, out_dir, procs, emit, teacher=teacher)
    job.fit.run_from(job.state, stop_after_step)
    return job.finish()


def resolve_job(task: str | TaskSpec, out_dir: str | Path,
                config: TrainConfig | None) -> tuple[ResolvedConfig, Path]:
    """A run's settled config and adapter directory, refused if that directory exists and the
    config does not allow replacing it."""
    spec = task if isinstance(task, TaskSpec) else get_task(task)
    run = (config or TrainConfig()).resolved(spec)
    out_dir = Path(out_dir)
    if out_dir.exists() and not run.overwrite:
        raise FileExistsError(f"{out_dir} already exists; choose another --out or pass "
                              "--overwrite to replace it")
    return run, out_dir


@dataclass
class Prepared:
    """One task's run, set up and restored from its checkpoint: ready to fit, then `finish`."""

    out_dir: Path
    run: ResolvedConfig
    backbone: Backbone
    base_fingerprint: str
    model: torch.nn.Module
    """The peft model: it evaluates and is saved."""
    fit: Fit
    state: FitState
    teacher: dict | None = None
    """The teacher's record, when distilled (task.json's `teacher`)."""

    def finish(self) -> TrainResult:
        """Save the best evaluation's adapter (the store's format) and report it."""
        fit = self.fit
        return save(self.out_dir, self.model, self.state, kind=fit.kind, run=self.run, data=fit.data,
                    evaluate=fit.evaluate, backbone=self.backbone,
                    base_fingerprint=self.base_fingerprint, procs=fit.procs,
                    checkpoint=fit.checkpoint, emit=fit.emit,
                    extra_meta=None if self.teacher is None else {"teacher": self.teacher})


def prepare(run: ResolvedConfig, out_dir: Path, procs: Processes, emit: Callable[[dict], None], *,
            backbone: Backbone | None = None, tokenizer=None,
            share: Callable[[torch.nn.Module], None] | None = None,
            fingerprints: dict | None = None,
            teacher: str | Path | Teacher | None = None) -> Prepared:
    """Read the data, build the model with LoRA, optimizer and schedule, restore a checkpoint.

    `train_many` passes the backbone and tokenizer it already holds, `share` (which ties the
    fresh base's weights to the one shared base, before LoRA is added) and a cache of base
    fingerprints by kind and output count. `teacher`: see `train`."""
    kind = kind_of(run.task)
    device = procs.device  # under a launch on GPUs: this process's own
    seed_everything(run.seed)
    with procs.main_first():  # the main process converts and caches the base, then the others read it
        backbone = backbone or Backbone.resolve(run.backbone)
        tokenizer = tokenizer or backbone.tokenizer()
        data = load_data(kind, run, tokenizer)
        attached = None
        if teacher is not None:  # its soft targets, and the unlabelled rows, before the plan
            data, attached = attach(Teacher.of(teacher), kind, data, backbone, tokenizer, device)
        base = kind.load_model(backbone, run.task.num_outputs)
    key = (kind.name, run.task.num_outputs)
    if fingerprints is not None and key in fingerprints:
        base_fp = fingerprints[key]
    else:
        base_fp = kind.base_fingerprint(backbone, base)  # the unquantized base's, whatever `quantize`
        if fingerprints is not None:
            fingerprints[key] = base_fp
    quantization = Quantization.of(run.quantize, run.double_quant)
    if quantization is not None:  # QLoRA
        base = quantized_base(kind, backbone, run.task.num_outputs, quantization)
    if share is not None:
        share(base)

    # Seeded again: building a base's head folder the first time draws random numbers, and the
    # LoRA init must not depend on whether that cache was warm (nor on which process built it).
    seed_everything(run.seed)
    model = with_lora(kind, base, backbone.arch, run).to(device)
    params = trainable(model)
    optimizer = optimizer_for(params, run)
    steps = Steps.plan(run, len(data.train_feats.ids))
    schedule = schedule_for(optimizer, steps)

    checkpoint = Checkpoint(out_dir.parent / ".checkpoints" / out_dir.name,
                            run_key(run, base_fp if attached is None else f"{base_fp}|{attached.key}",
                                    len(data.train_feats.ids)))
    state = FitState(EarlyStopping(run.patience, higher_is_better=run.task.metric != "mse"))
    progress = checkpoint.load(params, optimizer, schedule) if run.resume else None
    if progress is not None:
        state.restore(progress, checkpoint.best())

    evaluate = DevEvaluator(model, kind, data, procs)
    make_fit = Fit if attached is None else attached.fit  # a distilled run's loss has the teacher's
    fit = make_fit(model=model, stepper=procs.wrap(model), arch=backbone.arch, kind=kind, data=data,
              run=run, steps=steps, params=params, optimizer=optimizer, schedule=schedule,
              device=device, autocast=autocast(run.precision, device),
              scaler=grad_scaler(run.precision, device), procs=procs, evaluate=evaluate,
              checkpoint=checkpoint, emit=emit)
    return Prepared(out_dir=out_dir, run=run, backbone=backbone, base_fingerprint=base_fp,
                    model=model, fit=fit, state=state,
                    teacher=None if attached is None else attached.record)
