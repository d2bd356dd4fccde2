"""Dev-set evaluation during training: raw outputs in length-sorted batches, the kind's metrics."""

from __future__ import annotations

import time

import torch

from ..backbones import encoder
from ..tasks.kinds import DEFAULT_KIND, Kind, kind_of
from ..tasks.reading import collate
from .data import TrainingData
from .distributed import Processes


@torch.no_grad()
def predict_outputs(model: torch.nn.Module, kind: Kind, ids: list[list[int]], pad_id: int,
                    batch_size: int = 128, sep_id: int | None = None) -> list[torch.Tensor]:
    """Raw outputs per row in input order ([n_outputs], or [tokens, n_outputs] for token-level
    kinds, padding cut off), evaluated in length-sorted batches on the model's device and
    returned on the CPU (metrics and decoding run there)."""
    was_training = model.training
    device = next(model.parameters()).device
    model.eval()
    order = sorted(range(len(ids)), key=lambda i: len(ids[i]))
    out: list = [None] * len(ids)
    for s in range(0, len(order), batch_size):
        idx = order[s : s + batch_size]
        input_ids, mask = collate([ids[i] for i in idx], pad_id, device)
        arch = model.config.model_type
        logits = kind.outputs(model(**encoder.model_inputs(arch, input_ids, mask, sep_id))).cpu()
        for row, i in enumerate(idx):
            out[i] = logits[row, : len(ids[i])] if kind.per_token else logits[row]
    model.train(was_training)
    return out


def predict_logits(model: torch.nn.Module, ids: list[list[int]], pad_id: int,
                   batch_size: int = 128) -> torch.Tensor:
    """Raw outputs [n, n_outputs] of a sequence-kind model, in input order."""
    return torch.stack(predict_outputs(model, kind_of(DEFAULT_KIND), ids, pad_id, batch_size))


class DevEvaluator:
    """Evaluates `model` on the dev split (rows shared over the processes), remembering the
    last evaluation's outputs and seconds, and the outputs of the one kept as best."""

    def __init__(self, model: torch.nn.Module, kind: Kind, data: TrainingData, procs: Processes):
        self.model, self.kind, self.data, self.procs = model, kind, data, procs
        self.seconds = 0.0
        """What the last evaluation took: a time budget keeps room for one more."""
        self.last: list | None = None
        self.kept: list | None = None

    def __call__(self) -> dict[str, float]:
        t0 = time.perf_counter()
        d = self.data
        self.last = self.procs.map_rows(
            lambda ids: predict_outputs(self.model, self.kind, ids, d.pad, sep_id=d.sep), d.dev_feats.ids)
        metrics = self.kind.evaluate(d.spec, d.dev_split, d.dev_feats, self.last)
        self.seconds = time.perf_counter() - t0
        return metrics

    def test(self) -> tuple[dict[str, float], dict]:
        """The model's metrics on the card's test split and its report ({} and {} without one)."""
        d = self.data
        if d.test_feats is None:
            return {}, {}
        outputs = self.procs.map_rows(
            lambda ids: predict_outputs(self.model, self.kind, ids, d.pad, sep_id=d.sep), d.test_feats.ids)
        return (self.kind.evaluate(d.spec, d.test_split, d.test_feats, outputs),
                self.kind.report(d.spec, d.test_split, d.test_feats, outputs))

    def keep(self) -> None:
        """The last evaluation is the best so far: its outputs make the report."""
        self.kept = self.last
