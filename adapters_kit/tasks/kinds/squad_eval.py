"""SQuAD v1.1 exact match and F1, with the official answer normalisation.

Normalisation: lower case, punctuation removed, the articles a/an/the removed, whitespace
collapsed. A prediction scores its best match over all gold answers; the totals are means x 100.
"""

from __future__ import annotations

import re
import string
from collections import Counter

_PUNCT = set(string.punctuation)
_ARTICLES = re.compile(r"\b(a|an|the)\b")


def normalize_answer(text: str) -> str:
    text = "".join(ch for ch in text.lower() if ch not in _PUNCT)
    return " ".join(_ARTICLES.sub(" ", text).split())


def exact_match(prediction: str, gold: str) -> float:
    return float(normalize_answer(prediction) == normalize_answer(gold))


def f1(prediction: str, gold: str) -> float:
    pred, ref = normalize_answer(prediction).split(), normalize_answer(gold).split()
    common = Counter(pred) & Counter(ref)
    same = sum(common.values())
    if same == 0:
        return 0.0
    precision, recall = same / len(pred), same / len(ref)
    return 2 * precision * recall / (precision + recall)


def squad_scores(predictions: list[str], golds: list[list[str]]) -> dict[str, float]:
    """{"exact_match", "f1"} in percent, each prediction scored against its best gold answer."""
    if len(predictions) != len(golds):
        raise ValueError(f"{len(predictions)} predictions for {len(golds)} questions")
    em = sum(max(exact_match(p, g) for g in gs) for p, gs in zip(predictions, golds))
    f = sum(max(f1(p, g) for g in gs) for p, gs in zip(predictions, golds))
    n = max(1, len(predictions))
    return {"exact_match": 100.0 * em / n, "f1": 100.0 * f / n}
