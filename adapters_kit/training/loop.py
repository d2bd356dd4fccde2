"""Training one task adapter: LoRA + task head on a frozen backbone, with peft.

`train` is the recipe: resolve the config, read the data, set the model, optimizer and schedule
up, restore a checkpoint, fit, save. Each step lives in its own module beside this one."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import torch

from ..backbones import Backbone
from ..backbones.quantize import Quantization
from ..kinds import kind_of
from ..tasks import TaskSpec, get_task
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
    autocast,
    lora_config,
    optimizer_for,
    schedule_for,
    seed_everything,
    trainable,
    with_lora,
)

__all__ = ["PROGRESS_SECONDS", "ResolvedConfig", "TrainConfig", "TrainResult", "lora_config",
           "predict_logits", "predict_outputs", "train"]


def train(task: str | TaskSpec, out_dir: str | Path, config: TrainConfig | None = None,
          *, stop_after_step: int | None = None,
          on_progress: Callable[[dict], None] | None = None) -> TrainResult:
    """Train a LoRA adapter and its head for `task`; write the adapter directory to `out_dir`.

    `stop_after_step` ends the run early without saving an adapter, raising
    `TrainingInterrupted` (it names the checkpoint; a later call resumes from it).

    `on_progress` receives plain dicts on the main process: `{"event": "start", ...}`, then
    `"step"` (at most every `PROGRESS_SECONDS`), `"eval"` after each evaluation, and `"done"`.

    Under `accelerate launch` with several processes this runs as DDP (see `distributed`):
    the global batch stays `batch_size`, every process returns the same metrics, and only the
    main process writes the checkpoints and the adapter.
    """
    spec = task if isinstance(task, TaskSpec) else get_task(task)
    run = (config or TrainConfig()).resolved(spec)
    out_dir = Path(out_dir)
    if out_dir.exists() and not run.overwrite:
        raise FileExistsError(f"{out_dir} already exists; choose another --out or pass "
                              "--overwrite to replace it")
    if run.threads:
        torch.set_num_threads(run.threads)
    procs = Processes()
    kind = kind_of(run.task)

    seed_everything(run.seed)
    with procs.main_first():  # the main process converts and caches the base, then the others read it
        backbone = Backbone.resolve(run.backbone)
        data = load_data(kind, run, backbone.tokenizer())
        base = kind.load_model(backbone, run.task.num_outputs)
    base_fp = kind.base_fingerprint(backbone, base)  # the unquantized base's, whatever `quantize`
    quantization = Quantization.of(run.quantize, run.double_quant)
    if quantization is not None:  # QLoRA
        base = quantized_base(kind, backbone, run.task.num_outputs, quantization)

    # Seeded again: building a base's head folder the first time draws random numbers, and the
    # LoRA init must not depend on whether that cache was warm (nor on which process built it).
    seed_everything(run.seed)
    model = with_lora(kind, base, backbone.arch, run)
    params = trainable(model)
    optimizer = optimizer_for(params, run)
    steps = Steps.plan(run, len(data.train_feats.ids))
    schedule = schedule_for(optimizer, steps)

    checkpoint = Checkpoint(out_dir.parent / ".checkpoints" / out_dir.name,
                            run_key(run, base_fp, len(data.train_feats.ids)))
    state = FitState(EarlyStopping(run.patience, higher_is_better=run.task.metric != "mse"))
    progress = checkpoint.load(params, optimizer, schedule) if run.resume else None
    if progress is not None:
        state.restore(progress, checkpoint.best())

    emit = on_progress if on_progress is not None and procs.is_main else (lambda event: None)
    evaluate = DevEvaluator(model, kind, data, procs)
    Fit(model=model, stepper=procs.wrap(model), arch=backbone.arch, kind=kind, data=data, run=run,
        steps=steps, params=params, optimizer=optimizer, schedule=schedule,
        autocast=autocast(run.precision), procs=procs, evaluate=evaluate, checkpoint=checkpoint,
        emit=emit).run_from(state, stop_after_step)

    return save(out_dir, model, state, kind=kind, run=run, data=data, evaluate=evaluate,
                backbone=backbone, base_fingerprint=base_fp, procs=procs, checkpoint=checkpoint,
                emit=emit)
