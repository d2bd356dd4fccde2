"""A run's data: the task's train and dev splits, featurised by its kind, and the loss weights."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from ..tasks import TaskSpec
from ..tasks.kinds import Features, Kind
from .config import ResolvedConfig


@dataclass
class TrainingData:
    spec: TaskSpec
    train_split: Any
    """The kind's split (a `data.Split` for the built-in sequence kinds)."""
    dev_split: Any
    train_feats: Features
    """`ids`: one list of token ids per model row."""
    dev_feats: Features
    loss_weight: torch.Tensor | None
    """Per-label loss weights [n_labels], or None."""
    pad: int
    sep: int | None
    weighting_note: str | None = None
    """Why the loss is weighted though the card left `class_weights` unset (a rare class)."""
    test_split: Any = None
    """The card's `test` split, read before training (None when the card names none)."""
    test_feats: Features | None = None

    @property
    def weights_used(self) -> dict[str, float] | None:
        """The loss weights by label, as the result and `task.json` report them."""
        if self.loss_weight is None:
            return None
        return dict(zip(self.spec.labels, self.loss_weight.tolist()))


def load_data(kind: Kind, run: ResolvedConfig, tokenizer) -> TrainingData:
    spec = run.task
    train_split, dev_split = kind.splits(spec, seed=run.seed, max_train=run.max_train_examples)
    # read now, so that a bad test file fails before the training, not after it
    test_split = kind.eval_split(spec, split="test", seed=run.seed) if spec.test else None
    return TrainingData(
        spec=spec, train_split=train_split, dev_split=dev_split,
        train_feats=kind.featurize(spec, tokenizer, train_split, training=True),
        dev_feats=kind.featurize(spec, tokenizer, dev_split),
        loss_weight=kind.loss_weights(spec, train_split),
        pad=tokenizer.pad_token_id or 0, sep=tokenizer.sep_token_id,
        weighting_note=kind.default_weighting(spec, train_split), test_split=test_split,
        test_feats=None if test_split is None else kind.featurize(spec, tokenizer, test_split))
