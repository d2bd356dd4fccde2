"""Defaults that do what the warnings say: a rare class weighs the loss unless the card says
otherwise, the card's test split is scored beside dev, and a run gives the thread count back."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from helpers import quick, sentiment_rows, write_tsv

from adapters_kit import TaskSpec, TrainJob, train, train_many
from adapters_kit.errors import DataError
from adapters_kit.evaluation import evaluate_adapter


def _rare_task(tmp_path, **kw) -> TaskSpec:
    """'neg' is 4 of 124 training rows (3.2%): under the 5% that turns weighting on."""
    rows = sentiment_rows(400)
    train_rows = [r for r in rows if r[1] == "pos"][:120] + [r for r in rows if r[1] == "neg"][:4]
    dev = sentiment_rows(40, seed=1)
    return TaskSpec(name="rare", labels=["neg", "pos"], metric="f1_macro",
                    train=str(write_tsv(tmp_path / "train.tsv", ["text", "label"], train_rows)),
                    dev=str(write_tsv(tmp_path / "dev.tsv", ["text", "label"], dev)),
                    epochs=1, learning_rate=1e-2, batch_size=16, max_length=32, rank=4, **kw)


def test_a_rare_class_makes_unset_weights_balanced_and_the_result_says_so(tiny_distilbert, tmp_path):
    from sklearn.utils.class_weight import compute_class_weight

    spec = _rare_task(tmp_path)
    result = train(spec, tmp_path / "auto", quick(tiny_distilbert))
    y = np.array([0] * 4 + [1] * 120)
    expected = dict(zip(["neg", "pos"], compute_class_weight("balanced", classes=np.arange(2), y=y)))
    assert result.class_weights == pytest.approx(expected)
    assert "'neg' is 3.2%" in result.class_weights_note and "none" in result.class_weights_note
    meta = json.loads((result.path / "task.json").read_text())
    assert meta["training"]["class_weights_note"] == result.class_weights_note
    assert meta["training"]["class_weight_values"] == pytest.approx(expected)


@pytest.mark.parametrize("where", ["card", "config"])
def test_none_in_the_card_or_the_config_keeps_a_rare_class_unweighted(tiny_distilbert, tmp_path, where):
    spec = _rare_task(tmp_path, **({"class_weights": "none"} if where == "card" else {}))
    config = quick(tiny_distilbert, **({"class_weights": "none"} if where == "config" else {}))
    result = train(spec, tmp_path / "plain", config)
    assert result.class_weights is None and result.class_weights_note is None
    assert "class_weights_note" not in json.loads((result.path / "task.json").read_text())["training"]


def test_common_classes_stay_unweighted_by_default(tiny_distilbert, sentiment_task, tmp_path):
    result = train(sentiment_task, tmp_path / "a", quick(tiny_distilbert, epochs=1))
    assert result.class_weights is None and result.class_weights_note is None


def test_the_cards_test_split_is_scored_beside_dev_as_evaluate_scores_it(tiny_distilbert, sentiment_task,
                                                                         tmp_path):
    test = write_tsv(tmp_path / "test.tsv", ["text", "label"], sentiment_rows(30, seed=7))
    spec = TaskSpec(**{**sentiment_task.to_dict(), "test": str(test)})
    result = train(spec, tmp_path / "a", quick(tiny_distilbert, epochs=1, baseline=True))
    assert set(result.test_metrics) == set(result.metrics)
    assert set(result.test_baseline) >= {"accuracy"}
    again = evaluate_adapter(result.path, split="test", baseline=False)
    assert again["examples"] == 30
    for name, value in result.test_metrics.items():
        assert again["metrics"][name] == pytest.approx(value, abs=1e-6)
    meta = json.loads((result.path / "task.json").read_text())
    assert meta["test_metrics"] == result.test_metrics and meta["training"]["test_examples"] == 30
    no_test = train(sentiment_task, tmp_path / "b", quick(tiny_distilbert, epochs=1))
    assert no_test.test_metrics == {} and "test_metrics" not in json.loads(
        (no_test.path / "task.json").read_text())


def test_a_bad_test_file_fails_before_any_training(tiny_distilbert, sentiment_task, tmp_path):
    bad = write_tsv(tmp_path / "test.tsv", ["text", "label"], [("the film was great", "maybe")])
    spec = TaskSpec(**{**sentiment_task.to_dict(), "test": str(bad)})
    events = []
    with pytest.raises(DataError, match="'maybe'"):
        train(spec, tmp_path / "a", quick(tiny_distilbert), on_progress=events.append)
    assert not (tmp_path / "a").exists() and not any(e["event"] == "step" for e in events)


def test_train_and_train_many_give_the_thread_count_back(tiny_distilbert, sentiment_task, tmp_path):
    torch.set_num_threads(2)
    train(sentiment_task, tmp_path / "a", quick(tiny_distilbert, epochs=1, threads=1))
    assert torch.get_num_threads() == 2
    train_many([TrainJob(sentiment_task, tmp_path / "b", quick(tiny_distilbert, epochs=1, threads=1))])
    assert torch.get_num_threads() == 2
    with pytest.raises(FileExistsError):  # a run that fails gives it back too
        train(sentiment_task, tmp_path / "a", quick(tiny_distilbert, epochs=1, threads=1))
    assert torch.get_num_threads() == 2
    bad = TaskSpec(**{**sentiment_task.to_dict(), "train": str(tmp_path / "missing.tsv")})
    with pytest.raises(DataError):
        train(bad, tmp_path / "c", quick(tiny_distilbert, epochs=1, threads=1))
    assert torch.get_num_threads() == 2
