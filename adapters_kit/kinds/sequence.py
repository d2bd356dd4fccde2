"""Classification, multi-label and regression: one output per input, from the first token."""

from __future__ import annotations

import torch

from .. import heads
from ..data import load_eval_split, load_splits, tokenize
from ..errors import DataError
from ..metrics import class_report, label_counts, score, tfidf_baseline
from . import Features, Kind, Row, shown


class SequenceKind(Kind):
    def __init__(self, name: str) -> None:
        self.name = name

    def splits(self, spec, seed=0, max_train=None):
        return load_splits(spec, seed=seed, max_train=max_train)

    def read(self, spec, location):
        return load_eval_split(spec, location)

    def eval_split(self, spec, location=None, split="dev", seed=0):
        return load_eval_split(spec, location, split, seed)

    def featurize(self, spec, tokenizer, split, training=False):
        ids = tokenize(tokenizer, split, spec.max_length)
        return Features(ids=ids, targets=split.targets, example=list(range(len(ids))))

    def batch_targets(self, feats, rows, width):
        return feats.targets[rows]

    def loss(self, outputs, targets, weight=None):
        return heads.loss(self.name, outputs, targets, weight)

    def evaluate(self, spec, split, feats, outputs):
        return score(self.name, split.targets, torch.stack(outputs))

    def report(self, spec, split, feats, outputs):
        return class_report(self.name, spec.labels, split.targets, torch.stack(outputs))

    def label_counts(self, spec, split):
        return label_counts(self.name, spec.labels, split.targets)

    def baseline(self, spec, train, dev):
        return tfidf_baseline(spec, train, dev)

    def encode(self, spec, tokenizer, item):
        parts = [item] if isinstance(item, str) else list(item)
        if len(parts) != (2 if spec.is_pair else 1) or not all(isinstance(p, str) for p in parts):
            want = "a pair of texts" if spec.is_pair else "one text"
            raise DataError(f"this task takes {want} per input, got {shown(item)}")
        if not all(p.strip() for p in parts):
            raise DataError("got an empty text; send the text to classify")
        return [Row(tokenizer(*parts, truncation=True, max_length=spec.max_length)["input_ids"])]

    def decode(self, spec, rows, outputs, item):
        return heads.decode(self.name, spec.labels, outputs[0].unsqueeze(0))[0]
