"""Lazy loading under a byte budget, and the merged export."""

from __future__ import annotations

import torch
from conftest import quick

from adapters_kit import AdapterStore, MultiTaskModel, train
from adapters_kit.adapters.merge import merge_adapter
from adapters_kit.engine.cache import AdapterCache

TEXTS = ["the film was great lovely", "a plot was dull awful tedious"]


def test_lru_eviction_and_transparent_reload(tiny_distilbert, sentiment_task, topic_task, tmp_path):
    store = AdapterStore(tmp_path / "store")
    train(sentiment_task, store.path("tiny_sentiment"), quick(tiny_distilbert, epochs=1))
    train(topic_task, store.path("tiny_topic"), quick(tiny_distilbert, epochs=1))
    assert store.names() == ["tiny_sentiment", "tiny_topic"]
    one = store.read("tiny_sentiment").nbytes
    model = MultiTaskModel(tiny_distilbert)
    cache = AdapterCache(model, store, budget_bytes=int(one * 1.5))  # room for one adapter

    first = cache.predict("tiny_sentiment", TEXTS)
    assert cache.stats.misses == 1 and list(model.tasks) == ["tiny_sentiment"]
    cache.predict("tiny_topic", TEXTS)  # evicts tiny_sentiment
    assert list(model.tasks) == ["tiny_topic"] and cache.stats.evictions == 1
    again = cache.predict("tiny_sentiment", TEXTS)  # reloaded transparently
    assert again == first
    assert cache.stats.loads == 3 and cache.stats.hits == 0
    cache.predict("tiny_sentiment", TEXTS)
    assert cache.stats.hits == 1
    # a mixed batch needs both: both stay resident for it, over budget, rather than fail
    out = cache.predict_mixed([("tiny_sentiment", TEXTS[0]), ("tiny_topic", TEXTS[0])])
    assert out[0]["label"] in ("neg", "pos") and out[1]["label"] in ("film", "music", "plot")


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
