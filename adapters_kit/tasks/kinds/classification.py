"""Single-label classification: one label per input, softmax over the labels."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from .sequence import SequenceKind, label_index

RARE_SHARE = 0.05
"""A class under this share of the training rows makes an unset `class_weights` balanced."""


class ClassificationKind(SequenceKind):
    name = "classification"
    problem_type = "single_label_classification"
    metrics = ("accuracy", "f1_macro", "mcc")
    class_weighted = True

    def parse_targets(self, spec, raw, rows):
        index = {name: i for i, name in enumerate(spec.labels)}
        bad: dict[str, list[int]] = {}
        ids = []
        for row, v in zip(rows, raw):
            key, name = label_index(spec, v)
            if name not in index:
                bad.setdefault(key, []).append(row)
            ids.append(index.get(name, -1))
        return torch.tensor(ids, dtype=torch.long), bad

    def default_weighting(self, spec, train_split):
        if spec.class_weights is not None:
            return None
        counts = np.bincount(train_split.targets.numpy(), minlength=len(spec.labels))
        total = int(counts.sum())
        rare = [(name, c / total) for name, c in zip(spec.labels, counts) if 0 < c < RARE_SHARE * total]
        if not rare:
            return None
        shares = ", ".join(f"{name!r} is {share:.1%}" for name, share in rare)
        return (f"class_weights \"balanced\" by default: {shares} of the training rows (under "
                f"{RARE_SHARE:.0%}); set class_weights = \"none\" in the card, or --class-weights none, "
                "to train unweighted")

    def loss_weights(self, spec, train_split):
        if spec.class_weights == "none" or (spec.class_weights is None
                                            and self.default_weighting(spec, train_split) is None):
            return None
        if isinstance(spec.class_weights, dict):
            return torch.tensor([float(spec.class_weights.get(n, 1.0)) for n in spec.labels])
        from sklearn.utils.class_weight import compute_class_weight

        y = train_split.targets.numpy()
        present = np.unique(y)
        out = torch.ones(len(spec.labels))  # a class with no training rows never meets the loss
        out[torch.from_numpy(present)] = torch.from_numpy(
            compute_class_weight("balanced", classes=present, y=y)).float()
        return out

    def loss(self, outputs, targets, weight=None):
        return F.cross_entropy(outputs, targets,
                               weight=None if weight is None else weight.to(outputs.device))

    def score(self, targets, outputs):
        from sklearn.metrics import accuracy_score, f1_score, matthews_corrcoef

        y, pred = targets.numpy(), outputs.argmax(-1).numpy()
        return {"accuracy": float(accuracy_score(y, pred)),
                "f1_macro": float(f1_score(y, pred, average="macro", zero_division=0)),
                "mcc": float(matthews_corrcoef(y, pred))}

    def baseline_outputs(self, spec, x_train, y, x_dev, dev_targets):
        from sklearn.linear_model import LogisticRegression

        if len(set(y.tolist())) < 2:
            return None
        model = LogisticRegression(max_iter=2000, C=4.0).fit(x_train, y)
        out = torch.from_numpy(model.decision_function(x_dev))
        return torch.stack([-out, out], dim=-1) if out.dim() == 1 else out  # binary: one margin

    def report(self, spec, split, feats, outputs):
        from .class_report import class_report

        y, pred = split.targets.numpy(), torch.stack(outputs).argmax(-1).numpy()
        return class_report(spec.labels, y, pred, np.bincount(pred, minlength=len(spec.labels)),
                            confusion=True)

    def label_counts(self, spec, split):
        counts = np.bincount(split.targets.numpy(), minlength=len(spec.labels))
        return {name: int(c) for name, c in zip(spec.labels, counts)}

    def decode_logits(self, labels, logits):
        probs = logits.float().softmax(-1)
        return [{"label": labels[int(row.argmax())],
                 "scores": {name: float(p) for name, p in zip(labels, row)}} for row in probs]
