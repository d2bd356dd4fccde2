"""Task distillation inside `train`: a teacher adapter's soft outputs as training targets.

`train(task, out, config, teacher=Teacher("adapters/sst2"))` trains the config's backbone (the
student) as usual, except that each step's loss is

    alpha * (the kind's loss on the hard labels) + (1 - alpha) * kind.distill_loss(student,
                                                                       teacher, temperature)

The teacher is its adapter on its own base (plain peft, frozen, eval mode, under no_grad). Its
outputs do not depend on the batch a row is in, so they are computed once for every training
row before the first step (the same numbers a per-batch pass gives, at a fraction of the cost
when training runs several epochs). Rows of unlabelled text, featurised by the kind, join the
training rows with the teacher's outputs as their only targets.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import torch

from ..adapters.store import AdapterFiles, check_against_base, read_adapter
from ..backbones import Backbone
from ..errors import ConfigError, TrainingError, shown
from ..tasks.kinds import Features, Kind
from .data import TrainingData
from .evaluate import predict_outputs
from .fit import Fit
from .unlabelled import read_texts


@dataclass
class Teacher:
    """A trained adapter a student's adapter learns from, and how."""

    adapter: str | Path
    """The teacher's adapter directory (trained on its own backbone, for the same task)."""
    temperature: float = 2.0
    """Softens both distributions before they are compared (> 0; 1 leaves them as they are)."""
    alpha: float = 0.5
    """The hard labels' weight; the teacher's soft targets get 1 - alpha. 1.0: labels only,
    exactly `train`; 0.0: the teacher alone."""
    unlabelled: str | Path | None = None
    """A file of unlabelled text the teacher labels (any text column; see `unlabelled`)."""
    text_column: str | None = None
    max_unlabelled: int | None = None
    """Use at most this many unlabelled rows (the first ones)."""

    def __post_init__(self) -> None:
        problems = []
        t, a = self.temperature, self.alpha
        if isinstance(t, bool) or not isinstance(t, (int, float)) or not t > 0:
            problems.append(f"temperature {shown(t)} must be a number above 0 (e.g. 2; 1 leaves "
                            "the teacher's distribution as it is)")
        if isinstance(a, bool) or not isinstance(a, (int, float)) or not 0 <= a <= 1:
            problems.append(f"alpha {shown(a)} must be between 0 (the teacher alone) and 1 (the "
                            "hard labels alone)")
        m = self.max_unlabelled
        if m is not None and (isinstance(m, bool) or not isinstance(m, int) or m < 1):
            problems.append(f"max_unlabelled {shown(m)} must be a whole number of at least 1")
        if problems:
            raise ConfigError("the distillation settings are invalid:\n  - " + "\n  - ".join(problems))

    @classmethod
    def of(cls, teacher) -> Teacher:
        return teacher if isinstance(teacher, Teacher) else cls(teacher)


@dataclass
class SoftTargets:
    """The teacher's raw outputs for every training row: labelled rows first, then unlabelled."""

    outputs: list[torch.Tensor]
    """Per row [n_outputs], or [tokens, n_outputs] for per-token kinds."""
    labelled: int
    """Rows below this index have hard labels too."""
    per_token: bool

    def batch(self, rows: list[int], width: int, device) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The teacher's outputs for `rows` ([B, n] or [B, width, n]) and the real positions
        ([B, width] for per-token kinds, else None), on `device`."""
        if not self.per_token:
            return torch.stack([self.outputs[r] for r in rows]).to(device), None
        n = self.outputs[rows[0]].shape[-1]
        out = torch.zeros(len(rows), width, n)  # [B, T, n]
        mask = torch.zeros(len(rows), width, dtype=torch.bool)  # [B, T]
        for j, r in enumerate(rows):
            t = self.outputs[r][:width]
            out[j, : len(t)] = t
            mask[j, : len(t)] = True
        return out.to(device), mask.to(device)


@dataclass
class Attached:
    """A teacher read, checked and run: what `prepare` needs from it."""

    soft: SoftTargets
    teacher: Teacher
    record: dict
    """What the student's task.json keeps under `teacher`."""

    @property
    def key(self) -> str:
        """Part of the checkpoint key: a distilled run never resumes a plain one, nor another's."""
        return hashlib.sha256(json.dumps(self.record, sort_keys=True, default=str).encode()).hexdigest()

    def fit(self, **fields) -> DistillFit:
        return DistillFit(**fields, soft=self.soft, temperature=float(self.teacher.temperature),
                          alpha=float(self.teacher.alpha))


@dataclass
class DistillFit(Fit):
    """A fit whose loss mixes the hard labels' with the teacher's soft targets."""

    soft: SoftTargets | None = None
    temperature: float = 2.0
    alpha: float = 0.5

    def loss(self, outputs: torch.Tensor, rows: list[int], width: int) -> torch.Tensor:
        soft, alpha = self.soft, self.alpha
        labelled = [j for j, r in enumerate(rows) if r < soft.labelled]
        hard = None
        if alpha > 0 and labelled:
            if len(labelled) == len(rows):
                hard = super().loss(outputs, rows, width)
            else:
                picked = torch.tensor(labelled, device=outputs.device)
                hard = super().loss(outputs.index_select(0, picked), [rows[j] for j in labelled], width)
        if alpha == 1.0 and hard is not None:
            return hard  # labels only: exactly `train`'s loss
        teacher, mask = soft.batch(rows, width, outputs.device)
        distilled = self.kind.distill_loss(outputs.float(), teacher, self.temperature, mask)
        if hard is None:
            return (1 - alpha) * distilled if alpha < 1 else distilled * 0.0
        return alpha * hard + (1 - alpha) * distilled


def teacher_files(teacher: Teacher, spec) -> AdapterFiles:
    """The teacher's adapter, verified, and refused when it was trained for another task."""
    files = read_adapter(teacher.adapter)
    t = files.spec
    why = []
    if t.name != spec.name:
        why.append(f"it is an adapter for task {t.name!r}, not {spec.name!r}")
    elif t.kind != spec.kind or list(t.labels) != list(spec.labels):
        why.append(f"its task {t.name!r} is a {t.kind} task with labels {list(t.labels)}, this one "
                   f"a {spec.kind} task with labels {list(spec.labels)}")
    if why:
        raise TrainingError(f"teacher {teacher.adapter} cannot teach this run: {why[0]}; give a "
                            f"teacher adapter trained for {spec.name!r}")
    return files


def attach(teacher: Teacher, kind: Kind, data: TrainingData, student: Backbone, tokenizer,
           device: torch.device, batch_size: int = 128) -> tuple[TrainingData, Attached]:
    """Read and check the teacher, add the unlabelled rows, and compute the soft targets."""
    from peft import PeftModel

    spec = data.spec
    files = teacher_files(teacher, spec)
    if teacher.unlabelled is not None and not kind.distils_unlabelled:
        kind.unlabelled(spec, [], str(teacher.unlabelled))  # raises, saying why
    backbone = Backbone.resolve(files.task["backbone"]["name"])
    t_tokenizer = backbone.tokenizer()
    if t_tokenizer.get_vocab() != tokenizer.get_vocab():
        raise TrainingError(f"student {student.name!r} does not share teacher backbone "
                            f"{backbone.name!r}'s vocabulary ({len(tokenizer.get_vocab())} against "
                            f"{len(t_tokenizer.get_vocab())} tokens), so the teacher cannot read "
                            "the student's rows; make the student from the teacher (adapters-kit "
                            "backbones make) or distil onto a backbone with the same tokenizer")
    base = kind.load_model(backbone, spec.num_outputs)
    check_against_base(files, base, kind.base_fingerprint(backbone, base))
    model = PeftModel.from_pretrained(base, str(files.path)).to(device).eval()
    for p in model.parameters():
        p.requires_grad_(False)

    feats, n_unlabelled = data.train_feats, 0
    if teacher.unlabelled is not None:
        columns = read_texts(teacher.unlabelled, spec, teacher.text_column, teacher.max_unlabelled)
        split = kind.unlabelled(spec, columns, str(teacher.unlabelled))
        extra = kind.featurize(spec, tokenizer, split, training=True)
        n_unlabelled = len(extra.ids)
        feats = Features(ids=feats.ids + extra.ids, targets=feats.targets,
                         example=feats.example + [len(data.train_split) + e for e in extra.example],
                         meta=feats.meta + extra.meta if feats.meta else [])
    with torch.no_grad():
        outputs = predict_outputs(model, kind, feats.ids, data.pad, batch_size, data.sep)
    del model, base
    soft = SoftTargets(outputs=[o.float() for o in outputs], labelled=len(data.train_feats.ids),
                       per_token=kind.per_token)
    record = {"adapter": str(Path(files.path).resolve()), "digest": files.digest,
              "task": files.spec.name, "backbone": backbone.name,
              "fingerprint": files.fingerprint, "metrics": files.task.get("metrics"),
              "temperature": float(teacher.temperature), "alpha": float(teacher.alpha),
              "unlabelled": None if teacher.unlabelled is None else str(teacher.unlabelled),
              "unlabelled_rows": n_unlabelled}
    return dataclasses.replace(data, train_feats=feats), Attached(soft, teacher, record)
