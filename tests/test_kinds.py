"""Multi-label and regression tasks: trained, served, and scored with their own metrics."""

from __future__ import annotations

import random

import pytest
import torch
from conftest import WORDS_FILL, WORDS_NEG, WORDS_POS, WORDS_TOPIC, quick, write_tsv

from adapters_kit import MultiTaskModel, TaskSpec, train


@pytest.fixture()
def multilabel_task(tmp_path):
    rng = random.Random(0)
    rows = []
    for _ in range(96):
        tags = [t for t in ("pos", "topic") if rng.random() < 0.5]
        words = [rng.choice(WORDS_FILL)]
        words += rng.sample(WORDS_POS, 2) if "pos" in tags else rng.sample(WORDS_NEG, 2)
        words += [rng.choice(WORDS_TOPIC)] if "topic" in tags else []
        rows.append((" ".join(words), ",".join(tags)))
    path = write_tsv(tmp_path / "ml.tsv", ["text", "tags"], rows)
    return TaskSpec(name="tiny_tags", kind="multi-label", labels=["pos", "topic"],
                    label_field="tags", train=str(path), dev_fraction=0.25, epochs=3,
                    learning_rate=1e-2, batch_size=16, rank=4, targets="all-linear")


@pytest.fixture()
def regression_task(tmp_path):
    rng = random.Random(1)
    rows = []
    for _ in range(96):
        n = rng.randint(0, 3)
        words = rng.sample(WORDS_POS, n) + rng.sample(WORDS_NEG, 3 - n)
        rows.append((" ".join([rng.choice(WORDS_FILL), *words]), f"{n / 3:.3f}"))
    path = write_tsv(tmp_path / "reg.tsv", ["text", "score"], rows)
    return TaskSpec(name="tiny_score", kind="regression", label_field="score", train=str(path),
                    dev_fraction=0.25, epochs=3, learning_rate=1e-2, batch_size=16, rank=4,
                    targets="all-linear")


def test_multi_label_trains_and_decodes(tiny_distilbert, multilabel_task, tmp_path):
    r = train(multilabel_task, tmp_path / "ml", quick(tiny_distilbert, baseline=True))
    assert {"f1_micro", "f1_macro", "subset_accuracy"} <= set(r.metrics)
    assert "f1_micro" in r.baseline
    model = MultiTaskModel(tiny_distilbert)
    model.load(r.path)
    (pred,) = model.predict("tiny_tags", ["the great lovely film"])
    assert set(pred["scores"]) == {"pos", "topic"}
    assert pred["labels"] == [n for n in sorted(pred["scores"], key=lambda n: -pred["scores"][n])
                              if pred["scores"][n] >= 0.5]


def test_regression_trains_and_serves_beside_classification(tiny_distilbert, regression_task,
                                                             sentiment_task, tmp_path):
    reg = train(regression_task, tmp_path / "reg", quick(tiny_distilbert, baseline=True))
    assert {"pearson", "spearman", "mse"} <= set(reg.metrics) and "pearson" in reg.baseline
    cls = train(sentiment_task, tmp_path / "cls", quick(tiny_distilbert, epochs=1))
    model = MultiTaskModel(tiny_distilbert)
    model.load(reg.path)
    model.load(cls.path)
    texts = ["a film was great lovely superb", "the plot was dull awful boring"]
    alone = model.logits("tiny_score", texts)
    mixed = model.predict_mixed([("tiny_score", texts[0]), ("tiny_sentiment", texts[0]),
                                 ("tiny_score", texts[1])])
    assert mixed[0]["value"] == pytest.approx(float(alone[0]), abs=1e-5)
    assert mixed[2]["value"] == pytest.approx(float(alone[1]), abs=1e-5)
    assert mixed[1]["label"] in ("neg", "pos") and "value" not in mixed[1]
    assert alone.shape == torch.Size([2, 1])
