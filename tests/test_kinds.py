"""Multi-label and regression tasks: trained, served, and scored with their own metrics."""

from __future__ import annotations

import random

import pytest
import torch
from helpers import WORDS_FILL, WORDS_NEG, WORDS_POS, WORDS_TOPIC, quick, write_tsv

from adapters_kit import DataError, MultiTaskModel, TaskSpec, train


def _plain_peft_seq(path, n):
    import json

    from peft import PeftModel
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    base = json.loads((path / "adapter_config.json").read_text())["base_model_name_or_path"]
    model = AutoModelForSequenceClassification.from_pretrained(base, num_labels=n)
    return PeftModel.from_pretrained(model, str(path)).eval(), AutoTokenizer.from_pretrained(base)


def test_albert_token_types_are_built_as_its_tokenizer_builds_them(tiny_albert):
    from transformers import AutoTokenizer

    from adapters_kit.backbones.encoder import model_inputs
    from adapters_kit.tasks.reading import collate

    tok = AutoTokenizer.from_pretrained(tiny_albert)
    rows = [("the film", "was great lovely"), ("a plot was dull", "music")]
    enc = [tok(a, b) for a, b in rows] + [tok("just one text")]
    ids, mask = collate([e["input_ids"] for e in enc], tok.pad_token_id)
    got = model_inputs("albert", ids, mask, tok.sep_token_id)["token_type_ids"]
    for i, e in enumerate(enc):
        assert got[i, : len(e["input_ids"])].tolist() == e["token_type_ids"]
        assert got[i, len(e["input_ids"]) :].sum() == 0  # padding
    assert 1 in got[0].tolist()
    assert "token_type_ids" not in model_inputs("distilbert", ids, mask, tok.sep_token_id)


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


def test_sentence_pair_task_trains_and_serves(tiny_backbone, tmp_path):
    """A text-pair classification task, end to end: data, training, pair inputs at serving,
    and plain peft fed the tokenizer's own pair encoding (ALBERT: token types) agreeing."""
    rng = random.Random(5)
    rows = []
    for i in range(96):
        a = rng.choice(WORDS_POS + WORDS_NEG)
        same = i % 2 == 0
        b = a if same else rng.choice([w for w in WORDS_POS + WORDS_NEG if w != a])
        rows.append((f"the film was {a}", f"this plot was {b}", "same" if same else "different"))
    path = write_tsv(tmp_path / "pairs.tsv", ["first", "second", "label"], rows)
    spec = TaskSpec(name="tiny_pairs", labels=["different", "same"], text_fields=["first", "second"],
                    train=str(path), dev_fraction=0.25, epochs=2, learning_rate=1e-2,
                    batch_size=16, rank=4, targets="all-linear")
    r = train(spec, tmp_path / "pairs", quick(tiny_backbone, baseline=True))
    assert {"accuracy", "f1_macro", "mcc"} <= set(r.metrics) and "mcc" in r.baseline
    model = MultiTaskModel(tiny_backbone)
    model.load(r.path)
    pair = ("the film was great", "this plot was great")
    peft_model, tok = _plain_peft_seq(r.path, 2)
    with torch.no_grad():
        ref = peft_model(**tok(*pair, return_tensors="pt")).logits[0]
    torch.testing.assert_close(model.logits("tiny_pairs", [pair])[0], ref, rtol=0, atol=1e-5)
    (pred,) = model.predict("tiny_pairs", [pair])
    assert set(pred["scores"]) == {"different", "same"}
    # the pair is encoded as a pair, in order: swapping its texts changes the output
    assert not torch.allclose(model.logits("tiny_pairs", [pair]),
                              model.logits("tiny_pairs", [pair[::-1]]))
    with pytest.raises(DataError, match="empty text"):
        model.predict("tiny_pairs", [("the film was great", " ")])
    with pytest.raises(DataError, match="pair of texts"):
        model.predict("tiny_pairs", ["only one text"])
