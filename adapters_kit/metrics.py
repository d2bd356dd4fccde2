"""Evaluation metrics per task kind (scikit-learn), and the TF-IDF baseline."""

from __future__ import annotations

import numpy as np
import torch

from .data import Split
from .tasks import TaskSpec


def score(kind: str, targets: torch.Tensor, outputs: torch.Tensor) -> dict[str, float]:
    """Metrics for raw model outputs (logits, or values for regression) against targets."""
    from sklearn.metrics import accuracy_score, f1_score, matthews_corrcoef

    y = targets.numpy()
    if kind == "classification":
        pred = outputs.argmax(-1).numpy()
        return {"accuracy": float(accuracy_score(y, pred)),
                "f1_macro": float(f1_score(y, pred, average="macro", zero_division=0)),
                "mcc": float(matthews_corrcoef(y, pred))}
    if kind == "multi-label":
        pred = (outputs > 0).numpy().astype(int)  # sigmoid(x) > 0.5
        y = y.astype(int)
        return {"f1_micro": float(f1_score(y, pred, average="micro", zero_division=0)),
                "f1_macro": float(f1_score(y, pred, average="macro", zero_division=0)),
                "subset_accuracy": float(accuracy_score(y, pred))}
    from scipy.stats import pearsonr, spearmanr

    pred = outputs.reshape(-1).numpy()
    if np.std(pred) == 0 or np.std(y) == 0:
        return {"pearson": 0.0, "spearman": 0.0, "mse": float(np.mean((pred - y) ** 2))}
    return {"pearson": float(pearsonr(pred, y)[0]), "spearman": float(spearmanr(pred, y)[0]),
            "mse": float(np.mean((pred - y) ** 2))}


def tfidf_baseline(spec: TaskSpec, train: Split, dev: Split) -> dict[str, float]:
    """TF-IDF (word 1-2 grams) + logistic regression (ridge for regression) on the same split."""
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression, Ridge
    from sklearn.multiclass import OneVsRestClassifier

    vec = TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True, min_df=1)
    x_train = vec.fit_transform(train.joined())
    x_dev = vec.transform(dev.joined())
    y = train.targets.numpy()
    if spec.kind == "classification":
        if len(set(y.tolist())) < 2:
            return {}
        model = LogisticRegression(max_iter=2000, C=4.0).fit(x_train, y)
        out = torch.from_numpy(model.decision_function(x_dev))
        if out.dim() == 1:  # binary: one margin for the positive class
            out = torch.stack([-out, out], dim=-1)
    elif spec.kind == "multi-label":
        keep = y.sum(0) > 0
        model = OneVsRestClassifier(LogisticRegression(max_iter=2000, C=4.0))
        model.fit(x_train, y[:, keep].astype(int))
        out = torch.full(dev.targets.shape, -1.0, dtype=torch.float64)
        out[:, torch.from_numpy(keep)] = torch.from_numpy(model.decision_function(x_dev))
    else:
        out = torch.from_numpy(Ridge(alpha=1.0).fit(x_train, y).predict(x_dev))
    return score(spec.kind, dev.targets, out.float())
