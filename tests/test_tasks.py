"""The task registry and task cards."""

from __future__ import annotations

import pytest

from adapters_kit import TaskError, TaskSpec, get_task, list_tasks, load_card, register_task


def test_bundled_cards_load():
    names = {t.name for t in list_tasks()}
    assert {"sst2", "rte", "mrpc", "ag_news", "sms_spam", "support_intent",
            "support_urgency"} <= names
    assert get_task("rte").is_pair and not get_task("sst2").is_pair


def test_unknown_task_names_the_known_ones():
    with pytest.raises(TaskError) as e:
        get_task("sst3")
    assert "'sst3'" in str(e.value) and "sst2" in str(e.value) and "support_intent" in str(e.value)


def test_register_refuses_duplicates_and_bad_names():
    register_task(name="customer_a_intent", labels=["x", "y"], train="a.tsv")
    with pytest.raises(TaskError, match="already registered"):
        register_task(name="customer_a_intent", labels=["x", "y"])
    register_task(name="customer_a_intent", labels=["x", "y", "z"], replace=True)
    assert get_task("customer_a_intent").labels == ["x", "y", "z"]
    with pytest.raises(TaskError, match="lower-case"):
        TaskSpec(name="Bad Name!", labels=["a", "b"])


def test_every_problem_reported_at_once(tmp_path):
    card = tmp_path / "broken.toml"
    card.write_text('name = "broken"\nkind = "classifcation"\nlabels = ["a"]\n'
                    'text_fields = ["a", "b", "c"]\n[defaults]\nrank = 0\n')
    with pytest.raises(TaskError) as e:
        load_card(card)
    msg = str(e.value)
    assert "classifcation" in msg and "text_fields" in msg and "rank" in msg
    assert str(card) in msg


def test_unknown_card_key_is_named(tmp_path):
    card = tmp_path / "typo.toml"
    card.write_text('name = "typo"\nlabels = ["a", "b"]\nlabel_feild = "y"\n')
    with pytest.raises(TaskError, match="label_feild"):
        load_card(card)


def test_card_paths_resolve_relative_to_card_and_shared(tmp_path, monkeypatch):
    monkeypatch.setenv("ADAPTERS_KIT_SHARED_DATA", "/data/shared")
    card = tmp_path / "c.toml"
    card.write_text('name = "c"\nlabels = ["a", "b"]\n[data]\ntrain = "d/train.csv"\n'
                    'dev = "{shared}/x/dev.tsv"\n')
    spec = load_card(card)
    assert spec.train == str(tmp_path / "d" / "train.csv")
    assert spec.dev == "/data/shared/x/dev.tsv"
    other = spec.with_data("/elsewhere/t.jsonl")
    assert other.train == "/elsewhere/t.jsonl" and other.dev is None and other.format is None


def test_metric_must_fit_the_kind():
    with pytest.raises(TaskError, match="pearson"):
        TaskSpec(name="r", kind="classification", labels=["a", "b"], metric="pearson")
    assert TaskSpec(name="r", kind="regression").metric == "pearson"
    assert TaskSpec(name="m", kind="multi-label", labels=["a"]).metric == "f1_micro"
