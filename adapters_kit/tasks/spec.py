"""`TaskSpec`: one task's fields, checked once; and the rules for task names."""

from __future__ import annotations

import functools
import math
import re
import sys
import typing
from dataclasses import asdict, dataclass, field, fields

from ..errors import TaskError, shown
from .kinds import DEFAULT_KIND, Kind, get_kind, kind_names, kind_of

if sys.version_info >= (3, 11):
    pass
else:  # pragma: no cover
    pass

FORMATS = ("csv", "tsv", "jsonl", "parquet", "hub", "conll", "squad")
# Two name rules, both owned here. A *task name* (`TaskSpec.name`: cards, the registry, the
# `task.json` of an adapter) is a lower-case identifier. A *served name* is what the store and
# the server call an adapter: its store folder's name, chosen by whoever installs it (`PUT
# /v1/admin/adapters/{name}`), so it may say whose it is (`Customer.Sentiment`, `acme-v2`). It
# only has to be a safe single directory name: no separators, no hidden files, no `..`. Every
# task name is a served name, so `train ... --out store/TASK` always gives a servable folder.
TASK_NAME = re.compile(r"[a-z][a-z0-9_-]{0,63}")
SERVED_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.\-]{0,127}")
TASK_NAME_RULE = "lower-case letters, digits, '_' or '-', starting with a letter (e.g. 'customer_intent')"
SERVED_NAME_RULE = "letters, digits, '_', '-', '.', starting with a letter or digit, at most 128"


def is_task_name(name: object) -> bool:
    """Whether `name` may name a `TaskSpec` (see TASK_NAME_RULE)."""
    return isinstance(name, str) and TASK_NAME.fullmatch(name) is not None


def is_served_name(name: object) -> bool:
    """Whether `name` may name an adapter in a store or on the server (see SERVED_NAME_RULE)."""
    return isinstance(name, str) and SERVED_NAME.fullmatch(name) is not None and ".." not in name


@dataclass
class TaskSpec:
    """Everything needed to train and serve one task. Validated once, all problems reported together."""

    name: str
    """Lower-case identifier: letters, digits, `_` and `-`, starting with a letter."""
    kind: str = DEFAULT_KIND
    """A registered kind (`adapters_kit.tasks.kinds.kind_names()`): `classification`, `multi-label`,
    `regression`, `token-classification` (NER, BIO tags), `extractive-qa` (a start/end span in
    a context), or one added with `register_kind`."""
    labels: list[str] = field(default_factory=list)
    """Label names in output order; empty for regression."""
    text_fields: list[str] | None = None
    """One column (single text) or two (a text pair); unset: the kind's default (`text`; token
    classification `tokens`; extractive QA `question`, `context`)."""
    label_field: str | None = None
    """Column holding the label (unset: the kind's default, `label`; token classification `tags`;
    QA `answers`): a name, a raw value in `label_map`, or for multi-label a list
    or a `label_separator`-joined string."""
    label_map: dict[str, str] = field(default_factory=dict)
    """Raw value in the file -> label name, e.g. {"0": "negative"}."""
    label_separator: str = ","
    """For multi-label text columns: the separator between labels."""
    train: str | None = None
    """Training data: a file path, or a hub dataset name when `format = "hub"`."""
    dev: str | None = None
    """Evaluation data; if absent, `dev_fraction` of `train` is held out (seeded)."""
    test: str | None = None
    format: str | None = None
    """csv, tsv, jsonl, parquet or hub; guessed from the file suffix when absent."""
    encoding: str = "utf-8"
    dev_fraction: float = 0.1
    metric: str | None = None
    """Metric for early stopping and best checkpoint; the kind's first metric by default."""
    description: str = ""
    rank: int = 8
    lora_alpha: int = 16
    lora_dropout: float = 0.1
    targets: str = "qv"
    """LoRA target preset: `qv`, `attention` or `all-linear`."""
    epochs: float = 3.0
    learning_rate: float = 1e-3
    batch_size: int = 32
    class_weights: str | dict[str, float] | None = None
    """Loss weights per label: `"balanced"` (sklearn's n_rows / (n_classes * rows of the class),
    from the training rows), a table label -> weight (labels not named weigh 1), or `"none"`.
    Unset, a single-label task is weighted `"balanced"` when a class is under 5% of the training
    rows (the result and `task.json` say so), else not weighted; `"none"` keeps it unweighted.
    Classification weights its cross-entropy; multi-label sets BCE's `pos_weight` per label
    (`"balanced"`: negative rows / positive rows). Other kinds refuse it."""
    max_length: int | None = None
    """Word pieces per input; unset: the kind's default (128; extractive QA, per window: 384)."""
    doc_stride: int = 128
    """Extractive QA: tokens of overlap between the windows of a long context."""
    max_answer_length: int = 30
    """Extractive QA: the longest answer span decoded, in word pieces."""
    dev_articles: int = 10
    """Extractive QA without a dev file: the number of articles (SQuAD titles) held out. The
    split is the same every time: titles sorted, shuffled with a fixed seed, the last N held out."""
    source: str | None = None
    """The card file this spec came from, if any."""

    def __post_init__(self) -> None:
        # Types first: a card or a task.json from elsewhere may hold anything, and every later
        # check assumes the declared types.
        if isinstance(self.label_map, dict):  # raw values may be numbers (`{0: "negative"}`)
            self.label_map = {str(k) if isinstance(k, int) and not isinstance(k, bool) else k: v
                              for k, v in self.label_map.items()}
        problems = _type_problems(self)
        if problems:
            where = f" (card {self.source})" if isinstance(self.source, str) else ""
            raise TaskError(f"task {self.name!r}{where} is invalid:\n  - " + "\n  - ".join(problems))
        kind = get_kind(self.kind)
        if kind is None:
            problems.append(f"kind {self.kind!r} is not one of {kind_names()} (register_kind adds one)")
        # unset fields take the kind's defaults; any value may also be chosen on purpose
        defaults = kind or Kind
        if self.text_fields is None:
            self.text_fields = list(defaults.text_fields)
        if self.label_field is None:
            self.label_field = defaults.label_field
        if self.max_length is None:
            self.max_length = defaults.max_length
        if not is_task_name(self.name):
            problems.append(f"name {self.name!r} must be {TASK_NAME_RULE}")
        if kind is not None:
            if not kind.labelled and self.labels:
                problems.append(f"a {self.kind} task has no labels; remove `labels`")
            if kind.labelled and len(self.labels) < kind.min_labels:
                problems.append(f"a {self.kind} task needs `labels` (got {self.labels!r})")
            if len(set(self.labels)) != len(self.labels):
                problems.append(f"labels repeat: {self.labels!r}")
            if self.max_length < 8:
                problems.append(f"max_length must be an integer >= 8, got {self.max_length!r}")
            else:
                problems += kind.check(self)
            if self.metric is None:
                self.metric = kind.metrics[0]
            elif self.metric not in kind.metrics:
                problems.append(f"metric {self.metric!r} does not fit {self.kind}; use one of "
                                f"{list(kind.metrics)}")
            if self.class_weights is not None and self.class_weights != "none" \
                    and not kind.class_weighted:
                problems.append(f"class_weights apply to classification and multi-label tasks, "
                                f"not {self.kind}; remove class_weights")
        problems += _class_weight_problems(self.labels, self.class_weights)
        if not (1 <= len(self.text_fields) <= 2):
            problems.append(f"text_fields must name one or two columns, got {self.text_fields!r}")
        bad_map = sorted(set(self.label_map.values()) - set(self.labels))
        if bad_map:
            problems.append(f"label_map maps to {bad_map}, which are not in labels {self.labels}")
        if self.format is not None and self.format not in FORMATS:
            problems.append(f"format {self.format!r} is not one of {list(FORMATS)}")
        if not 0 < self.dev_fraction < 1:
            problems.append(f"dev_fraction {self.dev_fraction} must be between 0 and 1")
        for f, lo in (("rank", 1), ("lora_alpha", 1), ("batch_size", 1)):
            if not isinstance(getattr(self, f), int) or getattr(self, f) < lo:
                problems.append(f"{f} must be an integer >= {lo}, got {getattr(self, f)!r}")
        if not (self.epochs > 0 and self.learning_rate > 0):
            problems.append("epochs and learning_rate must be positive")
        if problems:
            where = f" (card {self.source})" if self.source else ""
            raise TaskError(f"task {self.name!r}{where} is invalid:\n  - " + "\n  - ".join(problems))
        self.label_map = {str(k): v for k, v in self.label_map.items()}

    @property
    def kind_impl(self) -> Kind:
        """The registered `Kind` this task's `kind` names."""
        return kind_of(self)

    @property
    def num_outputs(self) -> int:
        return kind_of(self).num_outputs(self)

    @property
    def is_pair(self) -> bool:
        return len(self.text_fields) == 2

    @property
    def is_sequence(self) -> bool:
        """One output per input (the classification kinds), read from the first token."""
        return not kind_of(self).per_token

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict, source: str | None = None) -> TaskSpec:
        if not isinstance(d, dict):
            raise TaskError(f"task card {source or ''!r} must be a table of fields, got "
                            f"{type(d).__name__}")
        known = set(_field_checks(cls))
        flat = dict(d)
        for section in ("data", "defaults"):  # the card's TOML tables flatten into the spec
            table = flat.pop(section, {}) or {}
            if not isinstance(table, dict):
                raise TaskError(f"task card {source or flat.get('name')!r}: [{section}] must be a "
                                f"table, got {type(table).__name__}")
            flat.update(table)
        unknown = sorted(set(flat) - known)
        if unknown:
            raise TaskError(f"task card {source or flat.get('name')!r} has unknown keys {unknown}; "
                            f"known keys are {sorted(known - {'source'})}")
        if source:
            flat["source"] = source
        return cls(**flat)

    def with_data(self, train: str | None = None, dev: str | None = None) -> TaskSpec:
        """A copy pointing at other data files (the CLI's `--data`)."""
        d = self.to_dict()
        if train:
            d.update(train=str(train), format=None)
            if dev is None:
                d["dev"] = None
        if dev:
            d["dev"] = str(dev)
        return TaskSpec(**d)


@functools.cache
def _checker(hint):
    """A test of whether a value is of the (simple) declared type `hint` (a bool is never a
    number), built once per type: a load checks every field."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if hint is float:
        return lambda v: (isinstance(v, (int, float)) and not isinstance(v, bool)
                          and math.isfinite(v))
    if hint is int:
        return lambda v: isinstance(v, int) and not isinstance(v, bool)
    if hint in (str, bool):
        return lambda v: isinstance(v, hint)
    if origin is list:
        item = _checker(args[0])
        return lambda v: isinstance(v, list) and all(item(x) for x in v)
    if origin is dict:
        key, val = _checker(args[0]), _checker(args[1])
        return lambda v: isinstance(v, dict) and all(key(k) and val(x) for k, x in v.items())
    if args and type(None) in args:  # X | None
        kept = [_checker(a) for a in args if a is not type(None)]
        return lambda v: v is None or any(c(v) for c in kept)
    return lambda v: True


def _type_name(hint) -> str:
    """The declared type in words, for an error message."""
    names = {float: "a finite number", int: "an integer", str: "a string", bool: "true or false"}
    if hint in names:
        return names[hint]
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin is list:
        return f"a list of {_type_name(args[0]).split(' ', 1)[1]}s"
    if origin is dict:
        return f"a table of {_type_name(args[1]).split(' ', 1)[1]}s"
    kept = [a for a in args if a is not type(None)]
    return " or ".join(_type_name(a) for a in kept) + " or null" if kept else str(hint)


@functools.cache
def _field_checks(cls: type) -> dict:
    """A dataclass's field name -> (declared type, its test), worked out once per class
    (every load of an adapter checks its task's fields)."""
    hints = typing.get_type_hints(cls)
    return {f.name: (hints[f.name], _checker(hints[f.name])) for f in fields(cls)}


def _type_problems(spec: TaskSpec) -> list[str]:
    out = []
    for name, (hint, ok) in _field_checks(type(spec)).items():
        value = getattr(spec, name)
        if not ok(value):
            out.append(f"{name} must be {_type_name(hint)}, got {type(value).__name__} "
                       f"{shown(value)}")
    return out


def _class_weight_problems(labels: list[str], value) -> list[str]:
    if value is None:
        return []
    if isinstance(value, str):
        return [] if value in ("balanced", "none") else [
            f"class_weights {value!r} must be \"balanced\", \"none\" or a table label -> weight"]
    if not isinstance(value, dict):
        return [f"class_weights {value!r} must be \"balanced\", \"none\" or a table label -> weight"]
    problems = []
    unknown = sorted(set(value) - set(labels))
    if unknown:
        problems.append(f"class_weights names {unknown}, which are not in labels {labels}")
    bad = {k: v for k, v in value.items() if isinstance(v, bool) or not isinstance(v, (int, float))
           or not v > 0}
    if bad:
        problems.append(f"class_weights {bad} must be positive numbers")
    return problems
