"""The fit: epochs of length-grouped batches, evaluations, early stopping and checkpoints."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import torch

from ..backbones import encoder
from ..errors import TrainingInterrupted
from ..tasks.kinds import Kind
from ..tasks.reading import collate, length_grouped_batches
from .checkpoint import Checkpoint
from .config import ResolvedConfig
from .data import TrainingData
from .distributed import Processes
from .evaluate import DevEvaluator
from .setup import Steps

PROGRESS_SECONDS = 10.0
"""Least seconds between two `on_progress` step events."""


class EarlyStopping:
    """The best dev metric so far, its step, and the evaluations since that did not beat it."""

    def __init__(self, patience: int, higher_is_better: bool = True) -> None:
        self.patience, self.higher_is_better = patience, higher_is_better
        self.best: float | None = None
        self.best_step: int | None = None
        self.bad_evals = 0

    def update(self, step: int, value: float) -> bool:
        """Count one evaluation; True when it is the best so far (ties are not better)."""
        better = self.best is None or (
            value > self.best if self.higher_is_better else value < self.best)
        if better:
            self.best, self.best_step, self.bad_evals = value, step, 0
        else:
            self.bad_evals += 1
        return better

    @property
    def should_stop(self) -> bool:
        return self.bad_evals >= self.patience

    def state_dict(self) -> dict:
        return {"best": self.best, "best_step": self.best_step, "bad_evals": self.bad_evals}

    def load_state_dict(self, state: dict) -> None:
        self.best, self.best_step, self.bad_evals = state["best"], state["best_step"], state["bad_evals"]


@dataclass
class FitState:
    """Where the fit is: what a checkpoint's `progress.json` holds, and the best weights."""

    stopping: EarlyStopping
    step: int = 0
    seen: int = 0
    """Training rows seen (every process's)."""
    seconds: float = 0.0
    losses: list = field(default_factory=list)
    """(step, global batch loss) per step."""
    evals: list = field(default_factory=list)
    """(step, dev metric) per evaluation."""
    best_metrics: dict[str, float] | None = None
    best_state: dict[str, torch.Tensor] | None = None
    """The adapter state of the best evaluation (kept in `best.safetensors`, not the JSON)."""
    stopped_early: bool = False

    def to_dict(self) -> dict:
        return {"step": self.step, "seen": self.seen, "seconds": self.seconds, "losses": self.losses,
                "evals": self.evals, "best_metrics": self.best_metrics,
                "early_stopping": self.stopping.state_dict()}

    def restore(self, progress: dict, best_state: dict[str, torch.Tensor] | None) -> None:
        self.stopping.load_state_dict(progress["early_stopping"])
        self.step, self.seen, self.seconds = progress["step"], progress["seen"], progress["seconds"]
        self.losses, self.evals = progress["losses"], progress["evals"]
        self.best_metrics, self.best_state = progress["best_metrics"], best_state


@dataclass
class Pace:
    """A running fit's progress bar, start time and last progress event."""

    bar: Any
    started: float
    last_emit: float


@dataclass
class Fit:
    """Everything a fit runs on. `model` evaluates and is saved; `stepper` (DDP's wrapper of
    it, or itself) takes the training steps."""

    model: torch.nn.Module
    stepper: torch.nn.Module
    arch: str
    kind: Kind
    data: TrainingData
    run: ResolvedConfig
    steps: Steps
    params: dict[str, torch.nn.Parameter]
    optimizer: torch.optim.Optimizer
    schedule: torch.optim.lr_scheduler.LRScheduler
    device: torch.device
    """Where the model is, and so where every batch, target and loss is made."""
    autocast: Callable
    scaler: torch.amp.GradScaler | None
    """fp16 training's loss scaler (None in fp32 and bf16, which need none)."""
    procs: Processes
    evaluate: DevEvaluator
    checkpoint: Checkpoint
    emit: Callable[[dict], None]

    def run_from(self, state: FitState, stop_after_step: int | None = None) -> None:
        """Train from `state` until the last step, early stopping, the time budget, or
        `stop_after_step` (then raise TrainingInterrupted, the checkpoint left to resume)."""
        pace = self.begin(state)
        for batch in self.batches(state):
            loss = self._step(batch)
            if self.advance(state, pace, batch, loss, stop_after_step):
                break
        self.end(state, pace)

    # The loop's parts, which `train_many` drives for many fits at once.

    def begin(self, state: FitState, show_bar: bool = True) -> Pace:
        """Start (or resume) the fit: its progress bar, clock and `start` event."""
        from tqdm.auto import tqdm

        run, steps, procs, spec = self.run, self.steps, self.procs, self.data.spec
        if procs.size > 1:  # each process its own dropout masks, as it has its own rows
            torch.manual_seed(run.seed * 1_000_003 + procs.rank * 1009 + state.step)
        bar = tqdm(total=steps.total, initial=state.step,
                   disable=not (show_bar and run.progress and procs.is_main),
                   desc=f"train {spec.name}", unit="step", dynamic_ncols=True)
        started = time.perf_counter() - state.seconds
        self.emit({"event": "start", "task": spec.name, "step": state.step, "total_steps": steps.total,
                   "train_rows": len(self.data.train_feats.ids), "dev_rows": len(self.data.dev_feats.ids),
                   "metric": spec.metric, "class_weights": self.data.weights_used,
                   "device": str(self.device), "precision": run.precision})
        return Pace(bar=bar, started=started, last_emit=time.perf_counter())

    def batches(self, state: FitState) -> Iterator[list[int]]:
        """The batches still to train on, epoch after epoch from `state.step`: the caller
        `advance`s the state after each one."""
        run, steps = self.run, self.steps
        lengths = [len(x) for x in self.data.train_feats.ids]
        while state.step < steps.total and not state.stopped_early:
            epoch, offset = divmod(state.step, steps.per_epoch)
            batches = length_grouped_batches(lengths, run.batch_size, seed=run.seed * 1000 + epoch)
            for batch in batches[offset:]:
                yield batch
                if state.stopped_early or state.step >= steps.total:
                    return

    def advance(self, state: FitState, pace: Pace, batch: list[int], loss: float,
                stop_after_step: int | None = None) -> bool:
        """Count a step taken on `batch`: report, evaluate and checkpoint when due; True when
        the fit is over (last step, early stopping, time budget)."""
        run, steps, procs = self.run, self.steps, self.procs
        state.step += 1
        state.seen += len(batch)
        state.losses.append((state.step, loss))
        pace.bar.update(1)
        if time.perf_counter() - pace.last_emit >= PROGRESS_SECONDS:
            pace.last_emit = time.perf_counter()
            self.emit({"event": "step", "step": state.step, "total_steps": steps.total,
                       "loss": round(loss, 5), "seconds": round(pace.last_emit - pace.started, 1)})
        over_time = run.max_seconds is not None and procs.any(
            time.perf_counter() - pace.started + self.evaluate.seconds >= run.max_seconds)
        if state.step % steps.eval_every == 0 or state.step == steps.total or over_time:
            self._evaluate(state, loss, pace.started, pace.bar)
            state.stopped_early = state.stopping.should_stop or over_time
        if stop_after_step is not None and state.step >= stop_after_step:
            pace.bar.close()
            procs.wait()  # the main process's checkpoint is complete before any exits
            raise self.interrupted(state.step, stop_after_step)
        return state.stopped_early or state.step >= steps.total

    def end(self, state: FitState, pace: Pace) -> None:
        pace.bar.close()
        state.seconds = time.perf_counter() - pace.started

    def _step(self, batch: list[int]) -> float:
        """One optimizer step on a global batch; its mean loss over every process's rows."""
        rows, weight = self.procs.share(batch)
        input_ids, mask = collate([self.data.train_feats.ids[i] for i in rows], self.data.pad,
                                  self.device)
        with self.autocast():
            logits = self.kind.outputs(self.stepper(**encoder.model_inputs(self.arch, input_ids, mask,
                                                                           self.data.sep)))
        loss = self.loss(logits, rows, input_ids.shape[1])
        if weight != 1.0:
            loss = loss * weight
        self.backward(loss)
        self.update()
        return self.procs.mean(loss)

    def loss(self, outputs: torch.Tensor, rows: list[int], width: int) -> torch.Tensor:
        """The kind's loss of `outputs` for training rows `rows`, padded to `width` tokens: the
        mean over these rows."""
        kind = self.kind
        targets = kind.batch_targets(self.data.train_feats, rows, width).to(outputs.device)
        return kind.loss(outputs.float(), targets, self.data.loss_weight)

    def backward(self, loss: torch.Tensor) -> None:
        """Backward through every process (fp16: of the scaled loss)."""
        self.procs.backward(loss if self.scaler is None else self.scaler.scale(loss))

    def update(self) -> None:
        """The optimizer step on the gradients of the last backward: clipped, scheduled."""
        scaler = self.scaler
        if scaler is not None:
            scaler.unscale_(self.optimizer)  # clip the true gradients, not the scaled ones
        torch.nn.utils.clip_grad_norm_(list(self.params.values()), 1.0)
        if scaler is None:
            self.optimizer.step()
        else:  # skips the step when the scaled gradients overflowed, then adjusts the scale
            scaler.step(self.optimizer)
            scaler.update()
        self.schedule.step()
        self.optimizer.zero_grad(set_to_none=True)

    def _evaluate(self, state: FitState, loss: float, started: float, bar) -> None:
        """Evaluate on dev, keep the best state, report, and checkpoint (not after the last step)."""
        from peft import get_peft_model_state_dict

        metric = self.data.spec.metric
        metrics = self.evaluate()
        value = metrics[metric]
        state.evals.append((state.step, value))
        if state.stopping.update(state.step, value):
            state.best_metrics = metrics
            state.best_state = {k: v.clone() for k, v in get_peft_model_state_dict(self.model).items()}
            self.evaluate.keep()
        self.emit({"event": "eval", "step": state.step, "total_steps": self.steps.total,
                   "loss": round(loss, 5), "metrics": metrics, "best": state.stopping.best,
                   "best_step": state.stopping.best_step,
                   "seconds": round(time.perf_counter() - started, 1)})
        bar.set_postfix(loss=f"{loss:.3f}", **{metric: f"{value:.4f}"})
        state.seconds = time.perf_counter() - started
        if state.step < self.steps.total and self.procs.is_main:
            self.checkpoint.save(self.params, self.optimizer, self.schedule, state.to_dict(),
                                 state.best_state)

    def interrupted(self, step: int, stop_after_step: int) -> TrainingInterrupted:
        name, total = self.data.spec.name, self.steps.total
        saved = self.checkpoint.dir if self.checkpoint.exists() else None
        then = (f"train again with the same settings to resume from its checkpoint {saved}" if saved
                else "no evaluation was checkpointed yet, so training again starts afresh")
        return TrainingInterrupted(f"training {name!r} stopped after step {step} of {total} "
                                   f"(stop_after_step={stop_after_step}); {then}",
                                   step=step, total_steps=total, checkpoint=saved)
