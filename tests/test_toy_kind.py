"""A new kind in one file (tests/toy_kind.py): registered, trained, saved, served in a mixed
batch beside a classification task, and loaded by plain peft."""

from __future__ import annotations

import json
import random

import pytest
import torch
from helpers import WORDS_FILL, WORDS_NEG, WORDS_POS, WORDS_TOPIC, quick, write_tsv
from toy_kind import OrdinalKind

from adapters_kit import MultiTaskModel, TaskError, TaskSpec, read_adapter, train
from adapters_kit.tasks.kinds import get_kind, kind_names, register_kind

WORDS_MID = WORDS_TOPIC  # neither positive nor negative


@pytest.fixture(scope="module")
def ordinal():
    kind = get_kind("ordinal") or register_kind(OrdinalKind())
    assert "ordinal" in kind_names()
    return kind


def _rows(n: int, seed: int) -> list[tuple[str, str]]:
    rng = random.Random(seed)
    words = {"low": WORDS_NEG, "mid": WORDS_MID, "high": WORDS_POS}
    rows = []
    for i in range(n):
        label = ("low", "mid", "high")[i % 3]
        rows.append((" ".join([rng.choice(WORDS_FILL), *rng.sample(words[label], 2)]), label))
    return rows


def test_a_kind_written_in_one_file_trains_saves_serves_mixed_and_plain_peft_loads_it(
        ordinal, tiny_distilbert, sentiment_task, tmp_path):
    from peft import PeftModel
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    train_path = write_tsv(tmp_path / "ord.tsv", ["text", "rating"], _rows(120, 0))
    dev_path = write_tsv(tmp_path / "ord_dev.tsv", ["text", "rating"], _rows(30, 1))
    spec = TaskSpec(name="tiny_ordinal", kind="ordinal", labels=["low", "mid", "high"],
                    label_field="rating", train=str(train_path), dev=str(dev_path), epochs=10,
                    learning_rate=1e-2, batch_size=16, max_length=32, rank=4, targets="all-linear")
    assert spec.metric == "accuracy" and spec.num_outputs == 1
    r = train(spec, tmp_path / "ordinal", quick(tiny_distilbert, baseline=True, patience=100))
    assert r.metrics["accuracy"] > 0.6 and r.metrics["mae"] < 0.6, r.metrics
    assert set(r.baseline) == {"accuracy", "mae"}
    files = read_adapter(r.path)
    assert files.spec.kind == "ordinal"
    sent = train(sentiment_task, tmp_path / "sent", quick(tiny_distilbert))

    model = MultiTaskModel(tiny_distilbert)
    model.load(r.path)
    model.load(sent.path)
    texts = ["the superb brilliant", "a dull boring", "this music ending"]
    alone = model.predict("tiny_ordinal", texts)
    assert [p["label"] for p in alone] == ["high", "low", "mid"]
    mixed = model.predict_mixed([("tiny_ordinal", texts[0]), ("tiny_sentiment", texts[1]),
                                 ("tiny_ordinal", texts[1]), ("tiny_sentiment", texts[0]),
                                 ("tiny_ordinal", texts[2])])
    assert [mixed[i]["value"] for i in (0, 2, 4)] == pytest.approx([p["value"] for p in alone],
                                                                    abs=1e-5)
    assert [mixed[i]["label"] for i in (1, 3)] == \
        [p["label"] for p in model.predict("tiny_sentiment", [texts[1], texts[0]])]

    # plain peft on the base the adapter names, as a user's own code would
    base = json.loads((r.path / "adapter_config.json").read_text())["base_model_name_or_path"]
    hf = AutoModelForSequenceClassification.from_pretrained(base, num_labels=1)
    peft_model = PeftModel.from_pretrained(hf, str(r.path)).eval()
    tok = AutoTokenizer.from_pretrained(base)
    with torch.no_grad():
        ref = peft_model(**tok(texts, padding=True, return_tensors="pt")).logits.reshape(-1)
    assert ref.tolist() == pytest.approx([p["value"] for p in alone], abs=1e-4)


def test_a_kind_is_checked_at_the_door(ordinal):
    with pytest.raises(TaskError, match="already registered"):
        register_kind(OrdinalKind())
    with pytest.raises(TaskError, match="Kind instance"):
        register_kind("ordinal")
    bad = OrdinalKind()
    bad.name = "Bad Name"
    with pytest.raises(TaskError, match="lower-case"):
        register_kind(bad)
    with pytest.raises(TaskError, match="at least 3 ordered labels"):
        TaskSpec(name="two", kind="ordinal", labels=["low", "high"])
    with pytest.raises(TaskError, match="register_kind adds one"):
        TaskSpec(name="nope", kind="no-such-kind", labels=["a", "b"])
