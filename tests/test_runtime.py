"""One base, many adapters: mixed batches, hot-swap, and plain peft agreeing with us."""

from __future__ import annotations

import json

import pytest
import torch
from helpers import quick

from adapters_kit import MultiTaskModel, train

TEXTS = ["the film was great lovely", "a plot was dull awful tedious", "music", "this cast was bland"]


@pytest.fixture()
def two_adapters(tiny_backbone, sentiment_task, topic_task, tmp_path):
    a = train(sentiment_task, tmp_path / "a", quick(tiny_backbone, epochs=1)).path
    b = train(topic_task, tmp_path / "b", quick(tiny_backbone, epochs=1)).path
    return tiny_backbone, a, b


def test_mixed_batch_equals_each_task_alone(two_adapters):
    backbone, a, b = two_adapters
    model = MultiTaskModel(backbone)
    model.load(a)
    model.load(b)
    alone_a = model.logits("tiny_sentiment", TEXTS)
    alone_b = model.logits("tiny_topic", TEXTS)
    mixed = [("tiny_sentiment", t) if i % 2 == 0 else ("tiny_topic", t) for i, t in enumerate(TEXTS)]
    mixed += [("tiny_topic", t) if i % 2 == 0 else ("tiny_sentiment", t) for i, t in enumerate(TEXTS)]
    out = model.logits_mixed(mixed)
    for (task, text), row in zip(mixed, out):
        ref = (alone_a if task == "tiny_sentiment" else alone_b)[TEXTS.index(text)]
        torch.testing.assert_close(row, ref, rtol=0, atol=1e-5)
    assert len(out[0]) == 2 and len(out[1]) == 3  # each row in its own task's label space


def test_bf16_engine_stays_close_to_fp32_on_both_paths(two_adapters):
    """bf16 is an opt-in speed mode: outputs move by bf16 rounding, not more, on the
    single-adapter path and the mixed path alike; fp32 stays the exact default."""
    backbone, a, b = two_adapters
    engines = {p: MultiTaskModel(backbone, precision=p) for p in ("fp32", "bf16")}
    for engine in engines.values():
        engine.load(a)
        engine.load(b)
    mixed = [("tiny_sentiment" if i % 2 else "tiny_topic", t) for i, t in enumerate(TEXTS * 2)]
    for run in (lambda m: m.logits("tiny_sentiment", TEXTS), lambda m: m.logits_mixed(mixed)):
        want, got = (run(engines[p]) for p in ("fp32", "bf16"))
        diffs = [float((g - w).abs().max()) for g, w in zip(got, want)]
        assert all(g.dtype == torch.float32 for g in got)
        assert max(diffs) < 0.05 and max(diffs) > 0  # bf16 really ran, and stayed close
    with pytest.raises(ValueError, match="'fp16' is not one of"):
        MultiTaskModel(backbone, precision="fp16")


def test_swap_a_b_a_gives_a_again(two_adapters):
    backbone, a, b = two_adapters
    model = MultiTaskModel(backbone)
    model.load(a)
    first = model.logits("tiny_sentiment", TEXTS)
    model.unload("tiny_sentiment")
    model.load(b)
    model.logits("tiny_topic", TEXTS)
    model.load(a)
    torch.testing.assert_close(model.logits("tiny_sentiment", TEXTS), first, rtol=0, atol=1e-6)


def test_load_is_idempotent_and_unload_missing_is_clear(two_adapters):
    backbone, a, _ = two_adapters
    model = MultiTaskModel(backbone)
    assert model.load(a) == model.load(a) == "tiny_sentiment"
    assert len(model.tasks) == 1
    model.unload("tiny_sentiment")
    with pytest.raises(KeyError, match="not loaded"):
        model.unload("tiny_sentiment")
    with pytest.raises(KeyError, match="not loaded"):
        model.predict("tiny_sentiment", ["x"])


def test_many_slots_grow_the_bank(tiny_distilbert, sentiment_task, tmp_path):
    path = train(sentiment_task, tmp_path / "a", quick(tiny_distilbert, epochs=1)).path
    model = MultiTaskModel(tiny_distilbert, capacity=2)
    ref = None
    for i in range(5):  # the same adapter under five names forces the bank to grow twice
        model.load(path, name=f"copy{i}")
        out = model.logits(f"copy{i}", TEXTS)
        ref = out if ref is None else ref
        torch.testing.assert_close(out, ref, rtol=0, atol=1e-6)
    assert model.capacity >= 6


@pytest.mark.parametrize("head", ["lora", "full"])
def test_plain_peft_loads_our_adapter(tiny_backbone, sentiment_task, tmp_path, head):
    from peft import PeftModel
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    path = train(sentiment_task, tmp_path / "a", quick(tiny_backbone, epochs=1, head=head)).path
    base = json.loads((path / "adapter_config.json").read_text())["base_model_name_or_path"]
    model = AutoModelForSequenceClassification.from_pretrained(base, num_labels=2)
    peft_model = PeftModel.from_pretrained(model, str(path)).eval()
    tok = AutoTokenizer.from_pretrained(base)
    with torch.no_grad():
        ref = torch.cat([peft_model(**tok(t, return_tensors="pt")).logits for t in TEXTS])
    ours = MultiTaskModel(tiny_backbone)
    ours.load(path)
    # raw logits, not probabilities: a softmax hides a constant shift (a lost head bias)
    torch.testing.assert_close(ours.logits("tiny_sentiment", TEXTS), ref, rtol=0, atol=1e-5)


def test_mixed_batch_equals_plain_peft_per_task(tiny_backbone, sentiment_task, topic_task, tmp_path):
    """Every row a different task, varied lengths and padding, against plain peft per task."""
    from peft import PeftModel
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    specs = [sentiment_task, topic_task]
    paths = {}
    for i, seed in enumerate((1, 2, 3)):  # three adapters, two label counts
        spec = specs[i % 2]
        name = f"{spec.name}_{seed}"
        path = train(spec, tmp_path / name, quick(tiny_backbone, epochs=1, seed=seed)).path
        paths[name] = (path, len(spec.labels))
    model = MultiTaskModel(tiny_backbone)
    for name, (path, _) in paths.items():
        model.load(path, name=name)
    texts = ["music", "the film was great lovely superb charming", "a plot was dull",
             "this cast was bland and the ending was tedious awful", "its story"]
    requests = [(name, t) for t in texts for name in paths]
    out = model.logits_mixed(requests)
    for name, (path, n) in paths.items():
        base = json.loads((path / "adapter_config.json").read_text())["base_model_name_or_path"]
        peft_model = PeftModel.from_pretrained(
            AutoModelForSequenceClassification.from_pretrained(base, num_labels=n), str(path)).eval()
        tok = AutoTokenizer.from_pretrained(base)
        for (req_name, text), row in zip(requests, out):
            if req_name != name:
                continue
            with torch.no_grad():
                ref = peft_model(**tok(text, return_tensors="pt")).logits[0]
            torch.testing.assert_close(row, ref, rtol=0, atol=1e-5)


def test_plan_chunks_sorts_by_length_and_keeps_both_bounds():
    from adapters_kit.engine.model import plan_chunks

    lengths = [5, 1, 9, 3, 3, 40, 2, 7]
    plan = plan_chunks(lengths, max_rows=3, max_tokens=16)
    assert sorted(i for chunk in plan for i in chunk) == list(range(len(lengths)))
    flat = [lengths[i] for chunk in plan for i in chunk]
    assert flat == sorted(lengths)  # short rows are never padded to long ones
    for chunk in plan:
        assert len(chunk) <= 3
        assert len(chunk) * max(lengths[i] for i in chunk) <= 16 or len(chunk) == 1
    assert [5] in plan  # the 40-token row is over the budget alone: a chunk of its own
    assert plan_chunks(lengths, max_rows=64) == [sorted(range(8), key=lengths.__getitem__)]
    assert plan_chunks([]) == []
