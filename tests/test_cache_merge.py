"""Lazy loading under a byte budget, and the merged export."""

from __future__ import annotations

import torch
from helpers import quick

from adapters_kit import LocalStore, MultiTaskModel, train
from adapters_kit.adapters.merge import merge_adapter
from adapters_kit.engine.cache import AdapterCache

TEXTS = ["the film was great lovely", "a plot was dull awful tedious"]


def test_lru_eviction_and_transparent_reload(tiny_distilbert, sentiment_task, topic_task, tmp_path):
    store = LocalStore(tmp_path / "store")
    train(sentiment_task, store.path("tiny_sentiment"), quick(tiny_distilbert, epochs=1))
    train(topic_task, store.path("tiny_topic"), quick(tiny_distilbert, epochs=1))
    assert store.names() == ["tiny_sentiment", "tiny_topic"]
    model = MultiTaskModel(tiny_distilbert)
    held = {}  # what the engine holds for each, the budget's unit (not its files' size)
    for name in store.names():
        model.load(store.path(name))
        held[name] = model.resident_bytes()
        model.unload(name)
    assert model.resident_bytes() == 0
    budget = max(held.values()) + min(held.values()) // 2  # room for either, not both
    cache = AdapterCache(model, store, budget_bytes=budget)

    first = cache.predict("tiny_sentiment", TEXTS)
    assert cache.stats.misses == 1 and list(model.tasks) == ["tiny_sentiment"]
    cache.predict("tiny_topic", TEXTS)  # evicts tiny_sentiment
    assert list(model.tasks) == ["tiny_topic"] and cache.stats.evictions == 1
    assert cache.stats.resident_bytes == model.resident_bytes() <= cache.budget_bytes
    again = cache.predict("tiny_sentiment", TEXTS)  # reloaded transparently
    assert again == first
    assert cache.stats.loads == 3 and cache.stats.hits == 0
    cache.predict("tiny_sentiment", TEXTS)
    assert cache.stats.hits == 1
    # a mixed batch needs both: both stay resident for it, over budget, rather than fail
    out = cache.predict_mixed([("tiny_sentiment", TEXTS[0]), ("tiny_topic", TEXTS[0])])
    assert out[0]["label"] in ("neg", "pos") and out[1]["label"] in ("film", "music", "plot")


def test_a_rank_64_adapter_among_rank_8_ones_stays_under_the_budget(
        tiny_distilbert, sentiment_task, tmp_path):
    """The budget bounds the bytes the engine holds (bank rows as allocated, heads), and a
    rank-64 adapter pads only its own bucket: the rank-8 ones keep their own size."""
    import shutil

    store = LocalStore(tmp_path / "store")
    small = train(sentiment_task, tmp_path / "r8", quick(tiny_distilbert, epochs=1, rank=8)).path
    train(sentiment_task, store.path("big"), quick(tiny_distilbert, epochs=1, rank=64))
    names = [f"small{i}" for i in range(4)]
    for name in names:
        shutil.copytree(small, store.path(name))
    model = MultiTaskModel(tiny_distilbert)
    sizes = {}
    for name in ("small0", "big"):
        model.load(store.path(name), name=name)
        sizes[name] = model.resident_bytes()
        model.unload(name)
    assert sizes["big"] > 4 * sizes["small0"]  # rank 64 against rank 8, heads alike

    everyone = 4 * sizes["small0"] + sizes["big"]
    cache = AdapterCache(model, store, budget_bytes=everyone)
    for name in ["big", *names]:  # all fit: no eviction, and no rank-8 row padded to 64
        cache.ensure([name])
        assert model.resident_bytes() <= cache.budget_bytes
    assert cache.stats.evictions == 0 and model.resident_bytes() == everyone

    tight = AdapterCache(MultiTaskModel(tiny_distilbert), store,
                         budget_bytes=2 * sizes["small0"] + sizes["big"])
    for name in ["big", *names, "big", *names[:2], "big"]:
        out = tight.predict(name, TEXTS)
        assert len(out) == len(TEXTS)
        assert tight.model.resident_bytes() <= tight.budget_bytes
        assert tight.stats.resident_bytes == tight.model.resident_bytes()
    assert tight.stats.evictions > 0 and "big" in tight.model.tasks


def test_merged_export_matches_the_adapter(tiny_backbone, sentiment_task, tmp_path):
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    path = train(sentiment_task, tmp_path / "a", quick(tiny_backbone, epochs=1)).path
    out = merge_adapter(path, tmp_path / "merged")
    merged = AutoModelForSequenceClassification.from_pretrained(str(out)).eval()
    assert merged.config.id2label == {0: "neg", 1: "pos"}
    tok = AutoTokenizer.from_pretrained(str(out))
    with torch.no_grad():
        ref = torch.cat([merged(**tok(t, return_tensors="pt")).logits for t in TEXTS])
    model = MultiTaskModel(tiny_backbone)
    model.load(path)
    torch.testing.assert_close(model.logits("tiny_sentiment", TEXTS), ref, rtol=0, atol=1e-5)
