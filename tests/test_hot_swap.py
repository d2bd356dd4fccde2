"""Hot-swap under load: requests see the old or the new adapter, never a mix, never an error."""

from __future__ import annotations

import threading

import torch
from helpers import quick

from adapters_kit import MultiTaskModel, train

TEXTS = ["the film was great lovely", "a plot was dull awful tedious", "this cast was bland"]


def test_replace_and_unload_while_predicting(tiny_distilbert, sentiment_task, topic_task, tmp_path):
    v1 = train(sentiment_task, tmp_path / "v1", quick(tiny_distilbert, epochs=1, seed=1)).path
    v2 = train(sentiment_task, tmp_path / "v2", quick(tiny_distilbert, epochs=1, seed=2)).path
    other = train(topic_task, tmp_path / "t", quick(tiny_distilbert, epochs=1)).path
    model = MultiTaskModel(tiny_distilbert, capacity=2)
    model.load(v2)
    ref2 = model.logits("tiny_sentiment", TEXTS)
    model.load(v1)  # a replace: same task name, new content
    ref1 = model.logits("tiny_sentiment", TEXTS)
    assert not torch.allclose(ref1, ref2, atol=1e-4)
    model.load(other)

    errors: list[BaseException] = []
    seen = {"v1": 0, "v2": 0}
    stop = threading.Event()

    def reader() -> None:
        try:
            while not stop.is_set():
                out = model.logits_mixed([("tiny_sentiment", t) for t in TEXTS])
                got = torch.stack(out)
                if torch.allclose(got, ref1, atol=1e-6, rtol=0):
                    seen["v1"] += 1
                elif torch.allclose(got, ref2, atol=1e-6, rtol=0):
                    seen["v2"] += 1
                else:
                    raise AssertionError(f"torn result: {got} is neither version")
        except BaseException as e:  # noqa: BLE001 - reported by the main thread
            errors.append(e)

    def swapper() -> None:
        try:
            for i in range(30):
                model.load(v2 if i % 2 == 0 else v1)
                model.unload("tiny_topic")
                model.load(other)
        except BaseException as e:  # noqa: BLE001
            errors.append(e)
        finally:
            stop.set()

    threads = [threading.Thread(target=reader) for _ in range(3)] + [threading.Thread(target=swapper)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not errors, errors[0]
    assert seen["v1"] + seen["v2"] > 0
    # every retired slot was given back: two resident tasks hold exactly two slots
    assert len({t.slot for t in model.tasks.values()}) == 2
    assert model.slot_usage() == (2, model.capacity - 1)
    model.trim()  # and the rows they left: each bucket keeps just the rows still held
    assert model.resident_bytes() == model.resident_bytes(trimmed=True)
    assert all(bank.rows(b) <= model.slots.held(b) for b in model.slots.buckets()
               for bank in model.banks.values())


def test_failed_replace_keeps_the_old_adapter(tiny_distilbert, sentiment_task, tmp_path):
    import shutil

    import pytest

    from adapters_kit import AdapterFileError

    v1 = train(sentiment_task, tmp_path / "v1", quick(tiny_distilbert, epochs=1, seed=1)).path
    model = MultiTaskModel(tiny_distilbert)
    model.load(v1)
    before = model.logits("tiny_sentiment", TEXTS)
    bad = tmp_path / "bad"
    shutil.copytree(v1, bad)
    (bad / "adapter_model.safetensors").write_bytes(b"\0" * 100)
    with pytest.raises(AdapterFileError):
        model.replace("tiny_sentiment", bad)
    torch.testing.assert_close(model.logits("tiny_sentiment", TEXTS), before, rtol=0, atol=0)
    with pytest.raises(KeyError, match="nothing to replace"):
        model.replace("not_loaded", v1)
