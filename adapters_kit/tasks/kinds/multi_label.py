"""Multi-label classification: any number of labels per input, a sigmoid per label."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .sequence import SequenceKind, label_index

THRESHOLD = 0.5


class MultiLabelKind(SequenceKind):
    name = "multi-label"
    problem_type = "multi_label_classification"
    metrics = ("f1_micro", "f1_macro")
    min_labels = 1
    class_weighted = True

    def expected_labels(self, spec):
        return super().expected_labels(spec) + f", separated by {spec.label_separator!r}"

    def parse_targets(self, spec, raw, rows):
        index = {name: i for i, name in enumerate(spec.labels)}
        bad: dict[str, list[int]] = {}
        result = torch.zeros(len(raw), len(spec.labels))
        for i, (row, v) in enumerate(zip(rows, raw)):
            items = v if isinstance(v, list) else str(v).split(spec.label_separator)
            for item in items:
                key, name = label_index(spec, item)
                if not key:
                    continue
                if name not in index:
                    bad.setdefault(key, []).append(row)
                else:
                    result[i, index[name]] = 1.0
        return result, bad

    def loss_weights(self, spec, train_split):
        """`pos_weight` per label: balanced is negatives / positives of the training rows."""
        if spec.class_weights in (None, "none"):
            return None
        if isinstance(spec.class_weights, dict):
            return torch.tensor([float(spec.class_weights.get(n, 1.0)) for n in spec.labels])
        targets = train_split.targets
        positives = targets.sum(0)  # [n_labels]
        return torch.where(positives > 0, (len(targets) - positives) / positives.clamp(min=1),
                           torch.ones(len(spec.labels)))

    def loss(self, outputs, targets, weight=None):
        return F.binary_cross_entropy_with_logits(
            outputs, targets, pos_weight=None if weight is None else weight.to(outputs.device))

    def distill_loss(self, outputs, teacher, temperature, mask=None):
        """Per label, the binary cross-entropy of the student's softened sigmoid against the
        teacher's softened probability, less the teacher's own entropy (so it is the Bernoulli
        KL divergence: 0 when they agree, the same gradient), times the temperature's square."""
        t = float(temperature)
        q_logits = teacher.float() / t
        q = torch.sigmoid(q_logits)
        loss = F.binary_cross_entropy_with_logits(outputs.float() / t, q, reduction="none")
        entropy = F.binary_cross_entropy_with_logits(q_logits, q, reduction="none")
        return (loss - entropy).mean(-1).mean() * t * t

    def score(self, targets, outputs):
        from sklearn.metrics import accuracy_score, f1_score

        y, pred = targets.numpy().astype(int), (outputs > 0).numpy().astype(int)  # sigmoid > 0.5
        return {"f1_micro": float(f1_score(y, pred, average="micro", zero_division=0)),
                "f1_macro": float(f1_score(y, pred, average="macro", zero_division=0)),
                "subset_accuracy": float(accuracy_score(y, pred))}

    def baseline_outputs(self, spec, x_train, y, x_dev, dev_targets):
        from sklearn.linear_model import LogisticRegression
        from sklearn.multiclass import OneVsRestClassifier

        keep = y.sum(0) > 0
        model = OneVsRestClassifier(LogisticRegression(max_iter=2000, C=4.0))
        model.fit(x_train, y[:, keep].astype(int))
        out = torch.full(dev_targets.shape, -1.0, dtype=torch.float64)
        out[:, torch.from_numpy(keep)] = torch.from_numpy(model.decision_function(x_dev))
        return out

    def report(self, spec, split, feats, outputs):
        from .class_report import class_report

        y = split.targets.numpy().astype(int)
        pred = (torch.stack(outputs) > 0).numpy().astype(int)
        return class_report(spec.labels, y, pred, pred.sum(0), confusion=False)

    def label_counts(self, spec, split):
        return {name: int(c) for name, c in zip(spec.labels, split.targets.numpy().sum(0))}

    def decode_logits(self, labels, logits):
        out = []
        for row in logits.float().sigmoid():
            scores = {name: float(p) for name, p in zip(labels, row)}
            chosen = sorted((n for n, p in scores.items() if p >= THRESHOLD), key=lambda n: -scores[n])
            out.append({"label": chosen[0] if chosen else None, "labels": chosen, "scores": scores})
        return out
