"""Token classification (NER) and extractive QA: data, metrics, training, plain peft, serving."""

from __future__ import annotations

import json
import random
import warnings

import pytest
import torch
from helpers import WORDS_FILL, WORDS_NEG, WORDS_POS, WORDS_TOPIC, quick

from adapters_kit import MultiTaskModel, TaskSpec, train
from adapters_kit.errors import DataError, DataWarning
from adapters_kit.tasks.kinds import kind_of
from adapters_kit.tasks.kinds.spans import best_span
from adapters_kit.tasks.kinds.squad_eval import exact_match, f1, normalize_answer, squad_scores
from adapters_kit.tasks.kinds.tokens import entities

ALL_WORDS = WORDS_FILL + WORDS_POS + WORDS_NEG + WORDS_TOPIC


def ner_rows(n: int, seed: int = 0) -> list[dict]:
    """Sentences whose topic words are ITEM entities (two in a row make one entity)."""
    rng = random.Random(seed)
    rows = []
    for _ in range(n):
        tokens = [rng.choice(ALL_WORDS) for _ in range(rng.randint(3, 9))]
        tags, prev = [], "O"
        for t in tokens:
            tag = ("I-ITEM" if prev != "O" else "B-ITEM") if t in WORDS_TOPIC else "O"
            tags.append(tag)
            prev = tag
        rows.append({"tokens": tokens, "tags": tags})
    return rows


def squad_json(n_articles: int, per_article: int, seed: int = 0, long: bool = False) -> dict:
    """SQuAD-shaped data: the answer is the first topic word of the context."""
    rng = random.Random(seed)
    data = []
    for a in range(n_articles):
        paragraphs = []
        for q in range(per_article):
            words = [rng.choice(WORDS_FILL + WORDS_POS) for _ in range(rng.randint(4, 30 if long else 10))]
            at = rng.randrange(len(words))
            words[at] = rng.choice(WORDS_TOPIC)
            context = " ".join(words)
            start = len(" ".join(words[:at])) + (1 if at else 0)
            paragraphs.append({"context": context, "qas": [{
                "id": f"a{a}q{q}", "question": "which film",
                "answers": [{"text": words[at], "answer_start": start}]}]})
        data.append({"title": f"article_{a}", "paragraphs": paragraphs})
    return {"version": "1.1", "data": data}


@pytest.fixture()
def ner_task(tmp_path):
    for name, rows in (("train", ner_rows(96)), ("dev", ner_rows(24, seed=1))):
        (tmp_path / f"{name}.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    return TaskSpec(name="tiny_ner", kind="token-classification", labels=["O", "B-ITEM", "I-ITEM"],
                    train=str(tmp_path / "train.jsonl"), dev=str(tmp_path / "dev.jsonl"), epochs=2,
                    learning_rate=1e-2, batch_size=16, max_length=32, rank=4, targets="all-linear")


@pytest.fixture()
def qa_task(tmp_path):
    path = tmp_path / "squad.json"
    path.write_text(json.dumps(squad_json(4, 24, long=True)))
    return TaskSpec(name="tiny_qa", kind="extractive-qa", train=str(path), format="squad",
                    dev_articles=1, epochs=2, learning_rate=1e-2, batch_size=16, max_length=24,
                    doc_stride=6, rank=4, targets="all-linear")


# -- metrics against known cases ----------------------------------------------------------------

def test_bio_decoding_and_entity_scores_match_known_cases():
    from seqeval.metrics import f1_score

    assert entities(["B-PER", "I-PER", "O", "B-LOC", "I-LOC", "B-LOC"]) == [
        ("PER", 0, 1), ("LOC", 3, 4), ("LOC", 5, 5)]
    assert entities(["O", "I-ORG", "I-ORG", "I-PER"]) == [("ORG", 1, 2), ("PER", 3, 3)]
    gold = [["B-PER", "I-PER", "O", "B-LOC"]]
    assert f1_score(gold, [["B-PER", "I-PER", "O", "B-ORG"]]) == pytest.approx(0.5)  # wrong type
    assert f1_score(gold, [["B-PER", "O", "O", "B-LOC"]]) == pytest.approx(0.5)  # wrong span
    assert f1_score(gold, gold) == 1.0


def test_squad_metric_matches_the_official_normalisation():
    assert normalize_answer("The  Quick, brown fox!") == "quick brown fox"
    assert normalize_answer("an apple a day") == "apple day"
    assert exact_match("the Denver Broncos", "Denver Broncos") == 1.0
    assert f1("cat sat", "the cat sat on the mat") == pytest.approx(2 * 1 * 0.5 / 1.5)
    assert f1("dog", "cat") == 0.0
    scores = squad_scores(["Denver", "1990"], [["Denver Broncos", "Denver"], ["in 1991"]])
    assert scores["exact_match"] == pytest.approx(50.0) and scores["f1"] == pytest.approx(50.0)


# -- data -----------------------------------------------------------------------------------------

def test_conll_reader_names_lines_of_unknown_tags_and_broken_bio(tmp_path):
    spec = TaskSpec(name="t", kind="token-classification", labels=["O", "B-PER", "I-PER"],
                    train=str(tmp_path / "x.txt"), dev=str(tmp_path / "x.txt"))
    (tmp_path / "x.txt").write_text("-DOCSTART- O\n\nAnna B-PER\nruns O\n\nBob B-PER\nKarl I-PER\n")
    train_split, _ = kind_of(spec).splits(spec)
    assert train_split.tokens[0] == ["Anna", "runs"] and train_split.tags[1] == ["B-PER", "I-PER"]
    (tmp_path / "x.txt").write_text("Anna B-PER\nruns O\n\nParis B-LOC\n")
    with pytest.raises(DataError, match=r"'B-LOC' \(line 4\)"):
        kind_of(spec).splits(spec)
    # every line of an unknown tag is the file's line, and a long list says how many in all
    (tmp_path / "x.txt").write_text("".join(f"w{i} B-LOC\n\n" for i in range(30)))
    with pytest.raises(DataError, match=r"'B-LOC' \(lines 1, 3, 5, .*, \.\.\. \(30 lines in all\)"):
        kind_of(spec).splits(spec)
    (tmp_path / "d").mkdir()
    with pytest.raises(DataError, match="is a directory"):
        kind_of(spec).splits(spec.with_data(str(tmp_path / "d"), str(tmp_path / "x.txt")))
    (tmp_path / "x.txt").write_text("Anna B-PER\nruns O\nBob I-PER\n\nx O\n")
    with pytest.raises(DataError, match=r"line 3: I-PER after O"):
        kind_of(spec).splits(spec)


def test_qa_reader_skips_answers_not_in_context_with_a_count(tmp_path):
    data = squad_json(3, 4)
    qa = data["data"][0]["paragraphs"][0]["qas"][0]
    qa["answers"] = [{"text": "zebra", "answer_start": 0}]
    data["data"][1]["paragraphs"][0]["qas"][0]["question"] = "  "
    path = tmp_path / "s.json"
    path.write_text(json.dumps(data))
    spec = TaskSpec(name="q", kind="extractive-qa", train=str(path), dev_articles=1)
    with pytest.warns(DataWarning, match=r"skipped 2 of 12 questions: a0q0 \(answer 'zebra' not"):
        train_split, dev = kind_of(spec).splits(spec)
    assert len(train_split) + len(dev) == 10


def test_article_split_is_fixed_and_disjoint(qa_task):
    kind = kind_of(qa_task)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        a_train, a_dev = kind.splits(qa_task, seed=0)
        b_train, b_dev = kind.splits(qa_task, seed=7)  # the training seed does not move it
    assert set(a_dev.titles) == set(b_dev.titles) and len(set(a_dev.titles)) == 1
    assert not set(a_train.titles) & set(a_dev.titles)


@pytest.mark.slow
@pytest.mark.smoke
def test_first_word_piece_carries_the_tag():
    from adapters_kit.backbones import Backbone

    tok = Backbone.resolve("embedded-distilbert").tokenizer()
    spec = TaskSpec(name="n", kind="token-classification", labels=["O", "B-PER", "I-PER"])
    from adapters_kit.tasks.kinds.tokens import TokenSplit

    split = TokenSplit([["Schwarzenegger", "runs"]], [["B-PER", "O"]], [[1, 2]], "mem")
    feats = kind_of(spec).featurize(spec, tok, split)
    pieces = tok.convert_ids_to_tokens(feats.ids[0])
    assert len(pieces) > 4  # the name splits into several pieces
    labelled = [(p, t) for p, t in zip(pieces, feats.targets[0]) if t != -100]
    assert labelled == [(pieces[1], 1), ("runs", 0)]


def test_long_contexts_are_windowed_and_decoded_across_windows(qa_task, tiny_distilbert):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_distilbert)
    kind = kind_of(qa_task)
    train_split, _ = kind.splits(qa_task)
    feats = kind.featurize(qa_task, tok, train_split, training=True)
    assert len(feats.ids) > len(train_split)  # some contexts needed several windows
    assert max(len(x) for x in feats.ids) <= qa_task.max_length
    found = 0
    for (s, e), ex, meta in zip(feats.targets, feats.example, feats.meta):
        if (s, e) != (0, 0):
            text = train_split.contexts[ex][meta["offsets"][s][0] : meta["offsets"][e][1]]
            assert text == train_split.answers[ex][0][0]
            found += 1
    assert found >= len(train_split)
    # decoding: the best span may sit in any window
    metas = [{"offsets": [None, (0, 3), (4, 8)]}, {"offsets": [None, (4, 8), (9, 12)]}]
    low, high = torch.zeros(3, 2), torch.zeros(3, 2)
    high[2] = torch.tensor([5.0, 5.0])
    assert best_span([low, high], metas, 30)[1:4] == (1, 9, 12)


# -- training, plain peft, serving ---------------------------------------------------------------

def _plain_peft(path, auto_cls: str, **kw):
    import transformers
    from peft import PeftModel

    base = json.loads((path / "adapter_config.json").read_text())["base_model_name_or_path"]
    model = getattr(transformers, auto_cls).from_pretrained(base, **kw)
    tokenizer = transformers.AutoTokenizer.from_pretrained(base)
    return PeftModel.from_pretrained(model, str(path)).eval(), tokenizer


@pytest.fixture()
def three_kinds(tiny_backbone, sentiment_task, ner_task, qa_task, tmp_path):
    paths = {t.name: train(t, tmp_path / t.name, quick(tiny_backbone, epochs=1)).path
             for t in (sentiment_task, ner_task, qa_task)}
    return tiny_backbone, paths


def test_mixed_batch_of_classification_ner_and_qa_equals_each_alone(three_kinds):
    backbone, paths = three_kinds
    model = MultiTaskModel(backbone)
    for p in paths.values():
        model.load(p)
    long_context = " ".join(["the film was great"] * 6)
    requests = [("tiny_sentiment", "the film was great lovely"),
                ("tiny_ner", "a lovely film story was dull"),
                ("tiny_qa", ("which film", "this music was quite great")),
                ("tiny_qa", ("which film", long_context)),
                ("tiny_ner", ["the", "plot"]),
                ("tiny_sentiment", "dull")]
    mixed = model.logits_mixed(requests)
    for (name, item), got in zip(requests, mixed):
        alone = model.logits_mixed([(name, item)])[0]
        got, alone = (got, alone) if isinstance(got, list) else ([got], [alone])
        for g, a in zip(got, alone, strict=True):
            torch.testing.assert_close(g, a, rtol=0, atol=1e-5)
    assert mixed[0].shape == (2,) and mixed[1].shape[-1] == 3 and mixed[2].shape[-1] == 2
    assert isinstance(mixed[3], list) and len(mixed[3]) > 1  # the long context took windows
    # and each kind's output equals plain peft with the adapter set, as a user would load it
    peft_ner, tok = _plain_peft(paths["tiny_ner"], "AutoModelForTokenClassification", num_labels=3)
    peft_qa, _ = _plain_peft(paths["tiny_qa"], "AutoModelForQuestionAnswering")
    with torch.no_grad():
        ner_ref = peft_ner(**tok("a lovely film story was dull", return_tensors="pt")).logits[0]
        qa_out = peft_qa(**tok("which film", "this music was quite great", return_tensors="pt"))
    qa_ref = torch.stack([qa_out.start_logits[0], qa_out.end_logits[0]], -1)
    torch.testing.assert_close(mixed[1], ner_ref, rtol=0, atol=1e-5)
    torch.testing.assert_close(mixed[2], qa_ref, rtol=0, atol=1e-5)
    assert ner_ref.std() > 1e-3 and qa_ref.std() > 1e-3  # trained heads, not zero outputs


def test_serving_answers_per_kind_and_refuses_empty_inputs(three_kinds):
    backbone, paths = three_kinds
    model = MultiTaskModel(backbone)
    for p in paths.values():
        model.load(p)
    text = "the film story was great"
    sent, ner, qa = model.predict_mixed([("tiny_sentiment", text), ("tiny_ner", text),
                                         ("tiny_qa", ("which film", text))])
    assert sent["label"] in ("neg", "pos")
    assert len(ner["tags"]) == 5
    for e in ner["entities"]:
        assert text[e["start"] : e["end"]] == e["text"] and e["type"] == "ITEM"
        assert 0 < e["score"] <= 1
    assert text[qa["start"] : qa["end"]] == qa["answer"] and qa["answer"]
    assert 0 < qa["score"] <= 1
    with pytest.raises(DataError, match="empty question"):
        model.predict("tiny_qa", [(" ", text)])
    with pytest.raises(DataError, match="empty context"):
        model.predict("tiny_qa", [("which film", "")])
    with pytest.raises(DataError, match="empty text"):
        model.predict("tiny_ner", [""])


def test_ner_and_qa_adapters_evaluate_with_their_metrics(three_kinds):
    from adapters_kit.evaluation import evaluate_adapter

    backbone, paths = three_kinds
    ner = evaluate_adapter(paths["tiny_ner"])["metrics"]
    qa = evaluate_adapter(paths["tiny_qa"])["metrics"]
    assert set(ner) == {"f1", "precision", "recall"} and 0 <= ner["f1"] <= 1
    assert set(qa) == {"f1", "exact_match"} and 0 <= qa["exact_match"] <= qa["f1"] <= 100
    saved = json.loads((paths["tiny_qa"] / "task.json").read_text())["metrics"]
    assert saved["f1"] == pytest.approx(qa["f1"], abs=1e-6)  # the engine agrees with training
    # merged export: a plain transformers folder of the right class, no peft needed
    from transformers import AutoModelForTokenClassification, AutoTokenizer

    from adapters_kit.adapters.merge import merge_adapter

    out = merge_adapter(paths["tiny_ner"], paths["tiny_ner"].parent / "merged")
    merged = AutoModelForTokenClassification.from_pretrained(str(out)).eval()
    tok = AutoTokenizer.from_pretrained(str(out))
    text = "a lovely film story was dull"
    with torch.no_grad():
        ref = merged(**tok(text, return_tensors="pt")).logits[0]
    engine = MultiTaskModel(backbone)
    engine.load(paths["tiny_ner"])
    torch.testing.assert_close(engine.logits_mixed([("tiny_ner", text)])[0], ref, rtol=0, atol=1e-4)
    assert merged.config.id2label[1] == "B-ITEM"


def test_conll_and_squad_cards_read_the_shared_data():
    from helpers import needs_shared

    from adapters_kit import get_task

    needs_shared("conll2003", "train.txt")
    needs_shared("squad_v1.1", "dev-v1.1.json")
    ner = get_task("conll2003")
    train_split, dev = kind_of(ner).splits(ner)
    assert (len(train_split), len(dev)) == (14041, 3250)
    squad = get_task("squad")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DataWarning)
        q_train, q_dev = kind_of(squad).splits(squad)
    assert len(set(q_train.titles)) == 38 and len(set(q_dev.titles)) == 10


@pytest.mark.slow
def test_embedded_backbone_learns_conll_entities(tmp_path):
    """A short real run: 1,500 CoNLL sentences, one epoch, scored on the validation set."""
    from helpers import needs_shared

    from adapters_kit import TrainConfig, get_task

    needs_shared("conll2003", "train.txt")
    r = train(get_task("conll2003"), tmp_path / "ner", TrainConfig(
        max_train_examples=1500, epochs=1, progress=False, baseline=False))
    assert r.metrics["f1"] > 0.5, r.metrics
