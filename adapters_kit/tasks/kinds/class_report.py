"""The per-class report the classification kinds share (scikit-learn's)."""

from __future__ import annotations

import numpy as np


def class_report(labels: list[str], y: np.ndarray, pred: np.ndarray, predicted: np.ndarray,
                 confusion: bool) -> dict:
    """Per-class precision, recall, F1 and support, the predicted count per class, and with
    `confusion` the confusion matrix (rows: true, columns: predicted)."""
    from sklearn.metrics import classification_report, confusion_matrix

    table = classification_report(y, pred, labels=list(range(len(labels))), target_names=labels,
                                  output_dict=True, zero_division=0)
    per_class = {name: {"precision": float(table[name]["precision"]),
                        "recall": float(table[name]["recall"]),
                        "f1": float(table[name]["f1-score"]), "support": int(table[name]["support"]),
                        "predicted": int(predicted[i])}
                 for i, name in enumerate(labels)}
    out = {"labels": list(labels), "per_class": per_class}
    if confusion:
        out["confusion_matrix"] = confusion_matrix(y, pred, labels=list(range(len(labels)))).tolist()
    return out
