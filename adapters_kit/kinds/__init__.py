"""Task kinds: how each kind reads its data, builds model inputs, trains, scores and answers.

    kind = kind_of(spec)
    train, dev = kind.splits(spec, seed=0)
    feats = kind.featurize(spec, tokenizer, train)
    loss = kind.loss(kind.outputs(model(...)), kind.batch_targets(feats, rows, width))

Sequence kinds (classification, multi-label, regression) give one output per input, read from
the first token. Token classification gives one output per word piece; extractive QA gives a
start and an end score per word piece, over one or more windows of a long context.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Any

import torch

from ..errors import DataError, shown  # noqa: F401 (the kinds' messages use it)


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
    """The interface every task kind implements (see the module docstring)."""

    name: str = ""
    per_token: bool = False
    """True when outputs are per word piece ([T, n]) rather than per input ([n])."""

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

    def loss(self, outputs: torch.Tensor, targets: torch.Tensor,
             weight: torch.Tensor | None = None) -> torch.Tensor:
        """The training loss; `weight` [n_labels] only for kinds that take class weights."""
        raise NotImplementedError

    def evaluate(self, spec, split, feats: Features, outputs: list[torch.Tensor]) -> dict:
        raise NotImplementedError

    def report(self, spec, split, feats: Features, outputs: list[torch.Tensor]) -> dict:
        """Per-class scores and a confusion matrix where the kind has classes (else {})."""
        return {}

    def label_counts(self, spec, split) -> dict[str, int]:
        """Rows per label in a split, for the never-predicted warning (else {})."""
        return {}

    def baseline(self, spec, train, dev) -> dict:
        return {}

    def encode(self, spec, tokenizer, item) -> list[Row]:
        raise NotImplementedError

    def decode(self, spec, rows: list[Row], outputs: list[torch.Tensor], item) -> dict:
        raise NotImplementedError


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


def kind_of(spec_or_kind) -> Kind:
    """The `Kind` for a TaskSpec (or a kind name)."""
    from .sequence import SequenceKind
    from .spans import SpanKind
    from .tokens import TokenKind

    name = spec_or_kind if isinstance(spec_or_kind, str) else spec_or_kind.kind
    if name == "token-classification":
        return TokenKind()
    if name == "extractive-qa":
        return SpanKind()
    return SequenceKind(name)
