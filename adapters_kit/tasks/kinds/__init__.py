"""Task kinds: how each kind reads its data, builds model inputs, trains, scores and answers.

    kind = kind_of(spec)                     # or get_kind("classification"); register_kind(...)
    train, dev = kind.splits(spec, seed=0)
    feats = kind.featurize(spec, tokenizer, train)
    loss = kind.loss(kind.outputs(model(...)), kind.batch_targets(feats, rows, width))

Sequence kinds (classification, multi-label, regression) give one output per input, read from
the first token. Token classification gives one output per word piece; extractive QA gives a
start and an end score per word piece, over one or more windows of a long context.
"""

from __future__ import annotations

import importlib
import random
import re
from dataclasses import dataclass, field
from typing import Any

import torch

from ...backbones import HEAD_OUT
from ...errors import DataError, shown  # noqa: F401 (the kinds' messages use it)


@dataclass
class Features:
    """Model inputs built from a split: one row per model input (a QA context may give several)."""

    ids: list[list[int]]
    targets: Any
    """What `batch_targets` reads: a tensor for sequence kinds, per-row lists otherwise."""
    example: list[int] = field(default_factory=list)
    """Row -> index of the example it came from."""
    meta: list = field(default_factory=list)
    """Per row: word ids (token classification) or offsets (QA); empty for sequence kinds."""


@dataclass
class Row:
    """One model input of a serving request, with what decoding needs."""

    ids: list[int]
    meta: Any = None


class Kind:
    """Everything that differs by task kind; one subclass per kind, registered by name.

    Nothing outside the kind modules branches on a kind's name: the card's defaults and checks,
    the transformers class and output layer, the LoRA head policy, loss, metrics and baseline,
    data reading and featurising, the serving input form, encode and decode all live here.
    """

    name: str = ""
    per_token: bool = False
    """True when outputs are per word piece ([T, n]) rather than per input ([n])."""
    head: str = HEAD_OUT
    """The output layer the task owns (and its adapter saves)."""
    auto_class: str = "AutoModelForSequenceClassification"
    """The transformers class the kind is trained and served with."""
    problem_type: str | None = None
    """transformers' `problem_type` for the sequence heads."""
    metrics: tuple[str, ...] = ()
    """Metric names; the first is the default for early stopping and the best checkpoint."""
    text_fields: tuple[str, ...] = ("text",)
    """Default text columns of a card of this kind."""
    label_field: str = "label"
    max_length: int = 128
    """Default word pieces per input."""
    labelled: bool = True
    """Whether a card names `labels` (regression and QA do not)."""
    min_labels: int = 2
    class_weighted: bool = False
    """Whether `class_weights` apply (the classification kinds)."""
    input_form: str = "a text"
    """How one serving input looks, in words (GET /v1/tasks, OpenAPI, error messages)."""

    # -- the card ---------------------------------------------------------------------------

    def check(self, spec) -> list[str]:
        """Problems of a card that only this kind knows of (beyond its labels' count)."""
        return []

    def num_outputs(self, spec) -> int:
        return len(spec.labels)

    def output_names(self, spec) -> list[str]:
        """A name per output (the merged model's id2label)."""
        return list(spec.labels)

    def describe_input(self, spec) -> str:
        return self.input_form

    # -- the model --------------------------------------------------------------------------

    def lora_config(self, arch: str, num_outputs: int, cfg):
        """The peft LoraConfig for one of the two head designs (see TrainConfig.head). `cfg` has
        `rank`, `lora_alpha`, `lora_dropout`, `targets` and `head` (training's LoraSettings or
        its resolved config)."""
        raise NotImplementedError

    def load_model(self, backbone, num_outputs: int, quantize=None):
        """The base with this kind's transformers head, as plain peft users load it (`quantize`:
        a bitsandbytes base, see `backbones.quantize`)."""
        return backbone.load_model(num_outputs, self.problem_type, self.auto_class, self.head,
                                   quantize=quantize)

    def base_fingerprint(self, backbone, model) -> str:
        """The fingerprint an adapter of this kind records (see backbones.fingerprint)."""
        return backbone.fingerprint()

    # -- data and training --------------------------------------------------------------------

    def read(self, spec, location: str):
        """One file (or hub split) of this kind's data, checked."""
        raise NotImplementedError

    def splits(self, spec, seed: int = 0, max_train: int | None = None):
        """(train, dev): the dev file, or a held-out part of train."""
        raise NotImplementedError

    def eval_split(self, spec, location: str | None = None, split: str = "dev", seed: int = 0):
        """One evaluation split: a given file, the task's test file, or its dev split."""
        if location:
            return self.read(spec, location)
        if split == "test":
            if not spec.test:
                raise DataError(f"task {spec.name!r} has no test data; pass --data PATH")
            return self.read(spec, spec.test)
        return self.splits(spec, seed=seed)[1]

    def featurize(self, spec, tokenizer, split, training: bool = False) -> Features:
        raise NotImplementedError

    def batch_targets(self, feats: Features, rows: list[int], width: int) -> torch.Tensor:
        raise NotImplementedError

    def outputs(self, model_output) -> torch.Tensor:
        return model_output.logits

    def loss_weights(self, spec, train_split) -> torch.Tensor | None:
        """Per-label loss weights [n_labels] for the card's `class_weights`, or None."""
        return None

    def loss(self, outputs: torch.Tensor, targets: torch.Tensor, weight=None) -> torch.Tensor:
        raise NotImplementedError

    def evaluate(self, spec, split, feats: Features, outputs: list[torch.Tensor]) -> dict:
        raise NotImplementedError

    def report(self, spec, split, feats: Features, outputs: list[torch.Tensor]) -> dict:
        """Per-class scores and a confusion matrix, where the kind has classes to count."""
        return {}

    def label_counts(self, spec, split) -> dict[str, int]:
        return {}

    def default_weighting(self, spec, train_split) -> str | None:
        """Why this run weighs its loss though the card left `class_weights` unset, or None."""
        return None

    def baseline(self, spec, train, dev) -> dict:
        return {}

    # -- distillation ---------------------------------------------------------------------------

    def distill_loss(self, outputs: torch.Tensor, teacher: torch.Tensor, temperature: float,
                     mask: torch.Tensor | None = None) -> torch.Tensor:
        """The soft-target loss of student `outputs` against the teacher's (same shape): the KL
        divergence of the teacher's softened distribution over the last dimension from the
        student's, at `temperature`, times its square (Hinton et al. 2015: the gradients keep
        their scale as the temperature changes). `mask` ([B], or [B, T] for per-token outputs)
        marks the positions that count (padding does not); the mean is over those."""
        import torch.nn.functional as F

        t = float(temperature)
        log_p = F.log_softmax(outputs.float() / t, -1)
        log_q = F.log_softmax(teacher.float() / t, -1)
        kl = (log_q.exp() * (log_q - log_p)).sum(-1)  # [B] or [B, T]
        if mask is not None:
            kl = kl[mask.bool()]
        return kl.mean() * t * t

    distils_unlabelled: bool = False
    """Whether `unlabelled` takes texts (a kind whose inputs are not plain texts does not)."""

    def unlabelled(self, spec, columns: list[list[str]], source: str):
        """A split of unlabelled texts (one list per text field) that `featurize` takes; its
        targets are placeholders (distillation trains on the teacher's outputs for them)."""
        raise DataError(f"task {spec.name!r} ({self.name}) cannot take unlabelled text for "
                        "distillation; distil on its labelled data alone (leave --unlabelled out)")

    # -- serving ------------------------------------------------------------------------------

    def coerce(self, spec, item):
        """A JSON input in the engine's terms, or a DataError naming the form expected."""
        if not isinstance(item, str):
            raise DataError(f"this task takes {self.describe_input(spec)} per input")
        return item

    def encode(self, spec, tokenizer, item) -> list[Row]:
        raise NotImplementedError

    def decode(self, spec, rows: list[Row], outputs: list[torch.Tensor], item) -> dict:
        raise NotImplementedError


class WholeHeadKind(Kind):
    """A kind whose output layer (labels x dim, a few KB) is trained and saved whole, bias
    included, over every word piece: no head dense layer. A bias-free low-rank output layer
    cannot learn the strong prior of NER's `O` tag, and training stalls."""

    per_token = True
    peft_task_type: str = ""

    def lora_config(self, arch, num_outputs, cfg):
        from peft import LoraConfig, TaskType

        from ...backbones import target_modules

        return LoraConfig(r=cfg.rank, lora_alpha=cfg.lora_alpha,
                          lora_dropout=cfg.lora_dropout, **lora_variants(cfg),
                          target_modules=target_modules(arch, cfg.targets, cfg.head, pooled=False),
                          task_type=getattr(TaskType, self.peft_task_type) if cfg.head == "full"
                          else None, modules_to_save=[self.head])


def lora_variants(cfg) -> dict[str, bool]:
    """The LoRA variants a training config asks for (rsLoRA, DoRA), as LoraConfig takes them."""
    return {"use_rslora": bool(getattr(cfg, "use_rslora", False)),
            "use_dora": bool(getattr(cfg, "use_dora", False))}


# The one table of kind names: the built-in kinds, imported on first use (a kind module needs
# torch and its data readers); `register_kind` adds others.
_BUILTIN = {"classification": "classification:ClassificationKind",
            "multi-label": "multi_label:MultiLabelKind",
            "regression": "regression:RegressionKind",
            "token-classification": "tokens:TokenKind",
            "extractive-qa": "spans:SpanKind"}
DEFAULT_KIND = "classification"
_KINDS: dict[str, Kind] = {}
_KIND_NAME = re.compile(r"^[a-z][a-z0-9-]{0,63}$")


def kind_names() -> list[str]:
    return sorted({*_BUILTIN, *_KINDS})


def register_kind(kind: Kind, *, replace: bool = False) -> Kind:
    """Add a task kind: `register_kind(MyKind())`; its `name` is what cards give as `kind`."""
    from ...errors import TaskError

    if not isinstance(kind, Kind):
        raise TaskError(f"register_kind takes a Kind instance, got {type(kind).__name__}; subclass "
                        "adapters_kit.tasks.kinds.Kind")
    if not isinstance(kind.name, str) or not _KIND_NAME.match(kind.name):
        raise TaskError(f"kind name {kind.name!r} must be lower-case letters, digits and '-', "
                        "starting with a letter (e.g. 'ordinal')")
    if (kind.name in _BUILTIN or kind.name in _KINDS) and not replace:
        raise TaskError(f"kind {kind.name!r} is already registered; pick another name or pass "
                        "replace=True")
    if not kind.metrics:
        raise TaskError(f"kind {kind.name!r} names no metrics; set `metrics` (the first is the "
                        "default for early stopping)")
    _KINDS[kind.name] = kind
    return kind


def get_kind(name: str) -> Kind | None:
    """The registered kind called `name`, or None."""
    if name in _KINDS:
        return _KINDS[name]
    if not isinstance(name, str) or name not in _BUILTIN:
        return None
    module, cls = _BUILTIN[name].split(":")
    kind = getattr(importlib.import_module(f"{__name__}.{module}"), cls)()
    _KINDS[name] = kind
    return kind


def kind_of(spec_or_kind) -> Kind:
    """The `Kind` for a TaskSpec (or a kind name)."""
    name = spec_or_kind if isinstance(spec_or_kind, str) else spec_or_kind.kind
    kind = get_kind(name)
    if kind is None:
        from ...errors import TaskError

        raise TaskError(f"unknown kind {name!r}; registered kinds: {kind_names()}")
    return kind


def require_train(spec) -> str:
    if not spec.train:
        raise DataError(f"task {spec.name!r} names no training data; set data.train in its card "
                        "or pass --data PATH")
    return spec.train


def seeded_order(n: int, seed: int) -> list[int]:
    """0..n-1 shuffled with `seed`: held-out and subset selections use it."""
    order = list(range(n))
    random.Random(seed).shuffle(order)
    return order
