"""A task kind the project never shipped, written the way a user would: one file.

Ordinal rating: ordered labels ("low" < "mid" < "high") learned as one number (the label's
rank, mean squared error), answered as the nearest label and the number itself. It reuses
the sequence kinds' reading, featurising and serving; everything that makes it ordinal is here.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from adapters_kit.tasks.kinds.sequence import SequenceKind, label_index


class OrdinalKind(SequenceKind):
    name = "ordinal"
    problem_type = "regression"
    metrics = ("accuracy", "mae")

    def num_outputs(self, spec):
        return 1

    def output_names(self, spec):
        return ["rank"]

    def check(self, spec):
        return [] if len(spec.labels) >= 3 else ["an ordinal task needs at least 3 ordered labels"]

    def parse_targets(self, spec, raw, rows):
        index = {name: i for i, name in enumerate(spec.labels)}
        bad: dict[str, list[int]] = {}
        out = []
        for row, v in zip(rows, raw):
            key, name = label_index(spec, v)
            if name not in index:
                bad.setdefault(key, []).append(row)
            out.append(float(index.get(name, 0)))
        return torch.tensor(out), bad

    def loss(self, outputs, targets, weight=None):
        return F.mse_loss(outputs.reshape(-1), targets)

    def score(self, targets, outputs):
        pred = outputs.reshape(-1)
        nearest = pred.round().clamp(0, float(targets.max()))
        return {"accuracy": float((nearest == targets).float().mean()),
                "mae": float((pred - targets).abs().mean())}

    def baseline_outputs(self, spec, x_train, y, x_dev, dev_targets):
        from sklearn.linear_model import Ridge

        return torch.from_numpy(Ridge(alpha=1.0).fit(x_train, y).predict(x_dev))

    def decode_logits(self, labels, logits):
        out = []
        for value in logits.float().reshape(-1):
            rank = int(value.round().clamp(0, len(labels) - 1))
            out.append({"label": labels[rank], "value": float(value)})
        return out
