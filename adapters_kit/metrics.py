"""Evaluation metrics per task kind (scikit-learn), and the TF-IDF baseline."""

from __future__ import annotations

import numpy as np
import torch

from .data import Split
from .tasks import TaskSpec


class QualityWarning(UserWarning):
    """A trained adapter looks worse than it should: a class never predicted, or below baseline."""


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


def class_report(kind: str, labels: list[str], targets: torch.Tensor, outputs: torch.Tensor) -> dict:
    """Per-class precision, recall, F1 and support (scikit-learn), the predicted count per class,
    and for single-label classification the confusion matrix (rows: true, columns: predicted).
    Empty for regression."""
    from sklearn.metrics import classification_report, confusion_matrix

    if kind == "classification":
        y, pred = targets.numpy(), outputs.argmax(-1).numpy()
        predicted = np.bincount(pred, minlength=len(labels))
    elif kind == "multi-label":
        y, pred = targets.numpy().astype(int), (outputs > 0).numpy().astype(int)
        predicted = pred.sum(0)
    else:
        return {}
    table = classification_report(y, pred, labels=list(range(len(labels))), target_names=labels,
                                  output_dict=True, zero_division=0)
    per_class = {name: {"precision": float(table[name]["precision"]),
                        "recall": float(table[name]["recall"]),
                        "f1": float(table[name]["f1-score"]), "support": int(table[name]["support"]),
                        "predicted": int(predicted[i])}
                 for i, name in enumerate(labels)}
    out = {"labels": list(labels), "per_class": per_class}
    if kind == "classification":
        out["confusion_matrix"] = confusion_matrix(y, pred, labels=list(range(len(labels)))).tolist()
    return out


def label_counts(kind: str, labels: list[str], targets: torch.Tensor) -> dict[str, int]:
    """Rows per label in a split (multi-label: rows carrying the label); {} for regression."""
    if kind == "classification":
        counts = np.bincount(targets.numpy(), minlength=len(labels))
    elif kind == "multi-label":
        counts = targets.numpy().sum(0)
    else:
        return {}
    return {name: int(c) for name, c in zip(labels, counts)}


def quality_warnings(spec: TaskSpec, report: dict, train_counts: dict[str, int] | None,
                     metrics: dict[str, float], baseline: dict[str, float]) -> list[str]:
    """What a user must hear about an adapter's dev (or eval) scores, one sentence each."""
    out = []
    for name, row in report.get("per_class", {}).items():
        rows = (train_counts or {}).get(name)
        if row["predicted"] == 0 and (rows is None or rows > 0):
            had = f"{rows} training rows, " if rows is not None else ""
            out.append(f"class {name!r} ({had}{row['support']} evaluation rows) is never predicted; "
                       "try --class-weights balanced (class_weights = \"balanced\" in the card) or "
                       "more epochs")
    ours, theirs = metrics.get(spec.metric), (baseline or {}).get(spec.metric)
    if ours is not None and theirs is not None:
        worse = ours > theirs if spec.metric == "mse" else ours < theirs
        if worse:
            out.append(f"the adapter's {spec.metric} {ours:.4f} is below the TF-IDF baseline's "
                       f"{theirs:.4f} on the same rows")
    return out
