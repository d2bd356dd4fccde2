"""Task distillation: a student backbone's adapter trained on a teacher adapter's soft outputs.

    result = distill("adapters/sst2", "adapters/sst2-mini", student="mini-3",
                     unlabelled="reviews.csv", temperature=2.0, alpha=0.5)

The task is the teacher's (its card in task.json, or the registered card of that name); the
student trains on the task's labelled data, mixed with the teacher's soft targets, plus any
unlabelled text, which the teacher labels. This is `train(..., teacher=...)` with the task and
the backbone filled in; `TrainJob(..., teacher=...)` does the same for a `train_many` fleet.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from pathlib import Path

from ..adapters.store import read_adapter
from ..errors import TaskError
from ..tasks import TaskSpec, get_task
from .config import TrainConfig
from .loop import train
from .save import TrainResult
from .teacher import Teacher


def teacher_task(adapter: str | Path) -> TaskSpec:
    """The task a teacher adapter was trained for: the registered card of its name when there is
    one with the same kind and labels (so its data paths are this machine's), else its own."""
    spec = read_adapter(adapter).spec
    try:
        card = get_task(spec.name)
    except TaskError:
        return spec
    same = card.kind == spec.kind and list(card.labels) == list(spec.labels)
    return card if same else spec


def distill(teacher: str | Path, out_dir: str | Path, student: str,
            config: TrainConfig | None = None, *, task: str | TaskSpec | None = None,
            unlabelled: str | Path | None = None, text_column: str | None = None,
            max_unlabelled: int | None = None, temperature: float = 2.0, alpha: float = 0.5,
            on_progress: Callable[[dict], None] | None = None) -> TrainResult:
    """Train `student`'s adapter for the teacher adapter's task from the teacher's soft outputs.

    `config` sets the training as for `train` (its backbone is replaced by `student`); `task`
    overrides the teacher's task (it must be the same task, or the teacher is refused).
    `unlabelled`: a file of texts the teacher labels (`max_unlabelled` rows at most).
    `temperature` > 0 softens both distributions; `alpha` weighs the hard labels (1 - alpha
    the teacher's targets). The adapter's task.json records the teacher."""
    how = Teacher(teacher, temperature=temperature, alpha=alpha, unlabelled=unlabelled,
                  text_column=text_column, max_unlabelled=max_unlabelled)  # checked here
    spec = teacher_task(teacher) if task is None else task
    config = dataclasses.replace(config or TrainConfig(), backbone=student)
    return train(spec, out_dir, config, teacher=how, on_progress=on_progress)
