"""Many task adapters trained together on one frozen base, each as `train` would train it.

    results = train_many([TrainJob("sst2", "adapters/sst2"),
                          TrainJob(my_spec, "adapters/mine", TrainConfig(epochs=2))])

Each step takes one batch from every task still training and runs them through the shared
encoder in as few passes as their lengths allow (`plan_passes`); each row goes through its own
task's LoRA factors and head (`routing`). Each task's loss is the mean over its own rows, and
the passes' backward is of the sum, so each task's gradient is what a batch of its own rows
gives. Each task keeps its own optimizer, schedule, evaluations, early stopping, checkpoints
(the same as `train`'s: either resumes the other's) and TF-IDF baseline; a task that is done
is saved at once, exactly as `train` saves it, and leaves the mix.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch

from ..backbones import Backbone
from ..devices import keeps_thread_count
from ..errors import ConfigError, TrainingError, TrainingInterrupted
from ..tasks import TaskSpec
from ..tasks.reading import collate
from .config import TrainConfig
from .distributed import Processes
from .fit import Pace
from .lanes import Relay, run_lanes, split
from .loop import Prepared, prepare, resolve_job
from .routing import SharedEncoder, task_outputs
from .save import TrainResult
from .teacher import Teacher

__all__ = ["TrainJob", "plan_passes", "train_many"]

PASS_TOKENS = 16384
"""Most padded token positions in one pass of the shared encoder (a step may take several)."""
PAD_SLACK = 1.25
"""A pass takes the next longer batch while its padded positions stay within this factor of
the positions the batches would have padded alone."""
SAME_FOR_ALL = ("backbone", "precision", "dropout", "device")
"""Settings one shared pass cannot vary by row: every job of a run must agree on them."""


@dataclass
class TrainJob:
    """One task to train in a `train_many` run: its task, adapter directory and config."""

    task: str | TaskSpec
    out_dir: str | Path
    config: TrainConfig | None = None
    teacher: str | Path | Teacher | None = None
    """Distil this task from a teacher adapter (see `train`'s `teacher`)."""


@dataclass
class _Member:
    """A task in the mix."""

    index: int
    job: Prepared
    pace: Pace
    batches: Iterator[list[int]]
    batch: list[int] = field(default_factory=list)

    @property
    def name(self) -> str:
        return self.job.run.task.name


def plan_passes(widths: Sequence[tuple[int, int]], max_tokens: int = PASS_TOKENS,
                slack: float = PAD_SLACK) -> list[list[int]]:
    """Batches (rows, longest row) cut into passes of the shared encoder: sorted by length,
    each pass padded to its longest row, at most `max_tokens` positions, and at most `slack`
    times the positions its batches pad to alone. Returns the batch indices per pass."""
    passes: list[list[int]] = []
    rows = alone = 0
    for i in sorted(range(len(widths)), key=lambda i: widths[i][1]):
        n, w = widths[i]
        if passes and (rows + n) * w <= max_tokens and (rows + n) * w <= slack * (alone + n * w):
            passes[-1].append(i)
            rows, alone = rows + n, alone + n * w
        else:
            passes.append([i])
            rows, alone = n, n * w
    return passes


@keeps_thread_count
def train_many(jobs: Sequence[TrainJob], *, on_progress: Callable[[dict], None] | None = None,
               stop_after_step: int | None = None, lanes: int = 1) -> dict[str, TrainResult]:
    """Train every job's adapter together on one shared frozen base; results by task name.

    Jobs may differ in task kind, label count, data, learning rate, epochs, rank and LoRA
    targets; they must share the backbone, the precision and the dropout setting. One job
    alone trains the same adapter as `train` with the same config.

    `on_progress` gets `train`'s events, each with a `"task"` key. `stop_after_step` stops each
    task after that many of its own steps, as `train`'s does: the tasks done by then are saved,
    then `TrainingInterrupted` is raised (`.results` holds those done, `.interrupted` each
    stopped task's own error, naming its checkpoint); the same call again resumes them.

    `lanes` > 1 splits the tasks into that many groups of about equal work, trained side by
    side in threads that divide the torch threads between them (module `lanes`; at most one
    lane per torch thread and per task): faster on a CPU whose cores one task's batch does
    not fill. With dropout on, such a run is not repeatable bit for bit (the lanes share
    torch's one random generator).
    """
    if isinstance(lanes, bool) or not isinstance(lanes, int) or lanes < 1:
        raise ConfigError(f"lanes={lanes!r}: give a whole number of lanes, at least 1 (1 trains "
                          "every task in one stream of passes; more split the tasks between "
                          "threads that share the CPU threads)")
    resolved = [resolve_job(j.task, j.out_dir, j.config) for j in jobs]
    _check_jobs(resolved)
    runs = [run for run, _ in resolved]
    threads = max((r.threads for r in runs if r.threads), default=None)
    if threads:
        torch.set_num_threads(threads)
    relay = Relay(on_progress)
    procs = Processes(torch.device(runs[0].device))
    if procs.size > 1:
        raise TrainingError("train_many runs in one process; launch it without `accelerate "
                            "launch`, or train each task with `train` under DDP")
    first = runs[0]
    backbone = Backbone.resolve(first.backbone)
    tokenizer = backbone.tokenizer()
    shared = SharedEncoder(backbone.load_model(1).to(procs.device), backbone.arch)
    shared.set_dropout(first.dropout)
    fingerprints: dict = {}

    members: list[_Member] = []
    for (run, out_dir), given in zip(resolved, jobs):
        name = run.task.name
        emit = _tagged(relay, name)  # a lane's events reach on_progress on this thread
        job = prepare(run, out_dir, procs, emit, backbone=backbone, tokenizer=tokenizer,
                      share=shared.share, fingerprints=fingerprints, teacher=given.teacher)
        index = shared.add(job.model)
        members.append(_Member(index, job, pace=None, batches=iter(())))  # type: ignore[arg-type]
    for m in members:  # after every model is built: setting one up draws no random numbers now
        m.pace = m.job.fit.begin(m.job.state, show_bar=False)
        m.batches = m.job.fit.batches(m.job.state)

    from tqdm.auto import tqdm

    total = sum(m.job.fit.steps.total for m in members)
    bar = tqdm(total=total, initial=sum(m.job.state.step for m in members),
               disable=not any(r.progress for r in runs), desc=f"train {len(members)} tasks",
               unit="step", dynamic_ncols=True)
    results: dict[str, TrainResult] = {}
    stopped: dict[str, TrainingInterrupted] = {}
    ticks = threading.Lock()

    def tick(n: int) -> None:
        with ticks:
            bar.update(n)

    def work(group: list[_Member], halt: threading.Event) -> None:
        _train(group, shared, backbone.arch, tick, results, stopped, stop_after_step, halt)

    try:
        lanes = min(lanes, len(members), torch.get_num_threads())  # each lane a thread of its own
        if lanes == 1:
            work(members, threading.Event())
        else:
            costs = [_cost(m) for m in members]
            groups = [[members[i] for i in g] for g in split(costs, lanes)]
            run_lanes(groups, work, relay, torch.get_num_threads() // lanes)
    finally:
        bar.close()
    if stopped:
        raise _interrupted(stopped, results)
    return {m.name: results[m.name] for m in members}


def _train(members: list[_Member], shared: SharedEncoder, arch: str, tick: Callable[[int], None],
           results: dict[str, TrainResult], stopped: dict[str, TrainingInterrupted],
           stop_after_step: int | None, halt: threading.Event) -> None:
    """Step `members` together until each is done (or stopped, or `halt` is set)."""
    active = list(members)
    while active and not halt.is_set():
        ready = []
        for m in active:
            m.batch = next(m.batches, None)
            if m.batch is None:  # resumed at its end: nothing left to train
                _leave(m, shared, results)
            else:
                ready.append(m)
        losses = _step(ready, shared, arch)
        tick(len(ready))
        active = []
        for m, loss in zip(ready, losses):
            fit, state = m.job.fit, m.job.state
            done = fit.advance(state, m.pace, m.batch, loss)
            if stop_after_step is not None and state.step >= stop_after_step:  # as `train`
                fit.end(state, m.pace)
                stopped[m.name] = fit.interrupted(state.step, stop_after_step)
                shared.remove(m.index)
            elif done:
                _leave(m, shared, results)
            else:
                active.append(m)


def _cost(m: _Member) -> float:
    """A member's work still to do, in token positions: its steps' rows and its evaluations."""
    fit, state = m.job.fit, m.job.state
    steps_left = max(0, fit.steps.total - state.step)
    train_ids, dev_ids = fit.data.train_feats.ids, fit.data.dev_feats.ids
    mean = sum(map(len, train_ids)) / max(1, len(train_ids))
    evals = steps_left / max(1, fit.steps.eval_every)
    return steps_left * fit.run.batch_size * mean + evals * sum(map(len, dev_ids))


def _check_jobs(resolved) -> None:
    problems = []
    names = [run.task.name for run, _ in resolved]
    if not resolved:
        problems.append("no jobs were given; pass at least one TrainJob")
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        problems.append(f"tasks {dup} appear more than once; each task trains once per run")
    dirs = [out.resolve() for _, out in resolved]
    same = sorted({str(d) for d in dirs if dirs.count(d) > 1})
    if same:
        problems.append(f"adapter directories {same} are given to several tasks; give each its own")
    for key in SAME_FOR_ALL:
        values = {name: getattr(run, key) for name, (run, _) in zip(names, resolved)}
        if len(set(map(repr, values.values()))) > 1:
            problems.append(f"the jobs differ in {key} ({values}); one shared pass needs one {key}: "
                            "train the others in another train_many run")
    if any(run.quantize for run, _ in resolved):
        problems.append("quantize: train_many shares one full-precision base between its tasks "
                        "and does not train on a quantized one; train QLoRA adapters with "
                        "`train --quantize`")
    if any(run.precision == "fp16" for run, _ in resolved):
        problems.append("precision fp16 needs a loss scaler per task, which one shared backward "
                        "cannot give; train with precision bf16 or fp32 (or `train` for fp16)")
    if problems:
        raise ConfigError("train_many cannot run these jobs:\n  - " + "\n  - ".join(problems))


def _tagged(on_progress, name: str) -> Callable[[dict], None]:
    if on_progress is None:
        return lambda event: None
    return lambda event: on_progress({**event, "task": name})


def _step(ready: list[_Member], shared: SharedEncoder, arch: str) -> list[float]:
    """One optimizer step of every member on its current batch; their losses."""
    losses: dict[int, float] = {}
    widths = [(len(m.batch), max(len(m.job.fit.data.train_feats.ids[i]) for i in m.batch))
              for m in ready]
    device = shared.model.get_input_embeddings().weight.device
    for group in plan_passes(widths, PASS_TOKENS, PAD_SLACK):
        members = [ready[i] for i in group]
        ids, groups, start = [], [], 0
        for m in members:
            feats = m.job.fit.data.train_feats
            ids += [feats.ids[i] for i in m.batch]
            groups.append((m.index, start, start + len(m.batch)))
            start += len(m.batch)
        data = members[0].job.fit.data  # pad and sep are the tokenizer's, shared by all
        input_ids, mask = collate(ids, data.pad, device)
        with members[0].job.fit.autocast():
            encoded = shared(input_ids, mask, data.sep, groups)
            outputs = []
            for i, m, (_, s, e) in zip(group, members, groups):
                outputs.append(m.job.fit.kind.outputs(task_outputs(
                    arch, m.job.model, encoded, s, e, widths[i][1], input_ids, mask, data.sep)))
        # each task's loss is the mean over its own rows: the sum's gradient for a task's
        # factors is that task's alone
        task_losses = [m.job.fit.loss(out, m.batch, widths[i][1])
                       for i, m, out in zip(group, members, outputs)]
        torch.stack(task_losses).sum().backward()
        for i, loss in zip(group, task_losses):
            losses[i] = float(loss.detach())
    for m in ready:
        m.job.fit.update()
    return [losses[i] for i in range(len(ready))]


def _leave(m: _Member, shared: SharedEncoder, results: dict[str, TrainResult]) -> None:
    """A task is done: its adapter saved as `train` saves it, its layers out of the mix."""
    m.job.fit.end(m.job.state, m.pace)
    shared.remove(m.index)
    results[m.name] = m.job.finish()


def _interrupted(stopped: dict[str, TrainingInterrupted],
                 results: dict[str, TrainResult]) -> TrainingInterrupted:
    first = next(iter(stopped.values()))
    lines = "\n  - ".join(str(e) for e in stopped.values())
    done = f"; done and saved: {sorted(results)}" if results else ""
    err = TrainingInterrupted(f"train_many stopped {len(stopped)} tasks before their end{done}:"
                              f"\n  - {lines}", step=max(e.step for e in stopped.values()),
                              total_steps=first.total_steps, checkpoint=first.checkpoint)
    err.interrupted, err.results = stopped, results
    return err

