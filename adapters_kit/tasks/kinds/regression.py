"""Regression: one number per input (or pair), mean squared error."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from .sequence import SequenceKind


class RegressionKind(SequenceKind):
    name = "regression"
    problem_type = "regression"
    metrics = ("pearson", "spearman")
    labelled = False

    def num_outputs(self, spec):
        return 1

    def output_names(self, spec):
        return ["value"]

    def expected_labels(self, spec):
        return "numbers"

    def parse_targets(self, spec, raw, rows):
        bad: dict[str, list[int]] = {}
        out = []
        for row, v in zip(rows, raw):
            try:
                out.append(float(v))
            except (TypeError, ValueError):
                bad.setdefault(str(v), []).append(row)
                out.append(0.0)
        return torch.tensor(out, dtype=torch.float32), bad

    def loss(self, outputs, targets, weight=None):
        return F.mse_loss(outputs.reshape(-1), targets)

    def distill_loss(self, outputs, teacher, temperature, mask=None):
        """The squared error to the teacher's value (a value has no temperature to soften)."""
        return F.mse_loss(outputs.float().reshape(-1), teacher.float().reshape(-1))

    def score(self, targets, outputs):
        from scipy.stats import pearsonr, spearmanr

        y, pred = targets.numpy(), outputs.reshape(-1).numpy()
        mse = float(np.mean((pred - y) ** 2))
        if np.std(pred) == 0 or np.std(y) == 0:
            return {"pearson": 0.0, "spearman": 0.0, "mse": mse}
        return {"pearson": float(pearsonr(pred, y)[0]), "spearman": float(spearmanr(pred, y)[0]),
                "mse": mse}

    def baseline_outputs(self, spec, x_train, y, x_dev, dev_targets):
        from sklearn.linear_model import Ridge

        return torch.from_numpy(Ridge(alpha=1.0).fit(x_train, y).predict(x_dev))

    def decode_logits(self, labels, logits):
        return [{"label": None, "value": float(v)} for v in logits.float().reshape(-1)]
