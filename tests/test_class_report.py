"""Per-class reports, the confusion matrix, quality warnings and class weighting."""

from __future__ import annotations

import json
from types import SimpleNamespace

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from helpers import quick, sentiment_rows, write_tsv

from adapters_kit import TaskError, TaskSpec, train
from adapters_kit.tasks.kinds import get_kind
from adapters_kit.training.quality import QualityWarning, quality_warnings


# The kinds own weights, losses and reports; these read them as a user's code would.
def class_weights(kind: str, labels: list[str], setting, targets: torch.Tensor):
    spec = TaskSpec(name="w", kind=kind, labels=labels, class_weights=setting)
    return get_kind(kind).loss_weights(spec, SimpleNamespace(targets=targets))


def loss(kind: str, logits, targets, weight=None):
    return get_kind(kind).loss(logits, targets, weight)


def class_report(kind: str, labels: list[str], targets, outputs):
    spec = TaskSpec(name="r", kind=kind, labels=labels)
    return get_kind(kind).report(spec, SimpleNamespace(targets=targets), None, list(outputs))


@pytest.fixture()
def skewed_task(tmp_path):
    """Sentiment with 1 'neg' row in 6, a held-out dev file of the same skew."""
    rows = sentiment_rows(240)
    skewed = [r for r in rows if r[1] == "pos"] + [r for r in rows if r[1] == "neg"][:24]
    dev = [r for r in sentiment_rows(120, seed=1) if r[1] == "pos"][:40] + \
        [r for r in sentiment_rows(120, seed=1) if r[1] == "neg"][:8]
    train_path = write_tsv(tmp_path / "data" / "train.tsv", ["text", "label"], skewed)
    dev_path = write_tsv(tmp_path / "data" / "dev.tsv", ["text", "label"], dev)
    return TaskSpec(name="skewed", labels=["neg", "pos"], train=str(train_path), dev=str(dev_path),
                    metric="f1_macro", epochs=2, learning_rate=1e-2, batch_size=16, max_length=32,
                    rank=4)


def test_balanced_weights_are_sklearns_and_reach_the_loss():
    from sklearn.utils.class_weight import compute_class_weight

    y = torch.tensor([0] * 6 + [1] * 2 + [2] * 12)
    w = class_weights("classification", ["a", "b", "c"], "balanced", y)
    assert w.tolist() == pytest.approx(compute_class_weight("balanced", classes=np.arange(3), y=y.numpy()))
    logits = torch.randn(20, 3)
    manual = (F.cross_entropy(logits, y, reduction="none") * w[y]).sum() / w[y].sum()
    assert loss("classification", logits, y, w) == pytest.approx(manual.item())
    assert loss("classification", logits, y, torch.ones(3)) == pytest.approx(
        loss("classification", logits, y).item())
    # a class with no training rows gets weight 1 (it never meets the loss); a table is taken as is
    w = class_weights("classification", ["a", "b", "c"], "balanced", torch.tensor([0, 0, 2]))
    assert w[1] == 1.0 and w[0] < w[2]
    assert class_weights("classification", ["a", "b"], {"b": 3.0}, y).tolist() == [1.0, 3.0]


def test_multi_label_balanced_is_pos_weight_negatives_over_positives():
    y = torch.tensor([[1, 0], [1, 1], [0, 0], [1, 0]], dtype=torch.float)
    w = class_weights("multi-label", ["x", "y"], "balanced", y)
    assert w.tolist() == pytest.approx([1 / 3, 3.0])
    logits = torch.randn(4, 2)
    assert loss("multi-label", logits, y, w) == pytest.approx(
        F.binary_cross_entropy_with_logits(logits, y, pos_weight=w).item())


def test_class_weights_are_checked_in_the_card():
    for bad, match in (({"kind": "regression", "labels": []}, "classification and multi-label"),
                       ({"class_weights": "balance"}, "'balance'"),
                       ({"class_weights": {"maybe": 2.0}}, r"\['maybe'\]"),
                       ({"class_weights": {"pos": -1}}, "positive")):
        kw = {"name": "t", "labels": ["neg", "pos"], "class_weights": "balanced", **bad}
        with pytest.raises(TaskError, match=match):
            TaskSpec(**kw)
    assert TaskSpec(name="t", labels=["a", "b"], class_weights="none").class_weights == "none"


def test_balanced_training_saves_its_weights_and_changes_the_adapter(tiny_distilbert, skewed_task,
                                                                    tmp_path):
    from safetensors.torch import load_file
    from sklearn.utils.class_weight import compute_class_weight

    plain = train(skewed_task, tmp_path / "plain", quick(tiny_distilbert))
    weighted = train(skewed_task, tmp_path / "w", quick(tiny_distilbert, class_weights="balanced"))
    meta = json.loads((weighted.path / "task.json").read_text())
    y = np.array([0] * 24 + [1] * 120)
    expected = dict(zip(["neg", "pos"], compute_class_weight("balanced", classes=np.arange(2), y=y)))
    assert meta["task"]["class_weights"] == "balanced"
    assert meta["training"]["class_weight_values"] == pytest.approx(expected)
    assert weighted.class_weights == pytest.approx(expected)
    assert meta["training"]["train_label_counts"] == {"neg": 24, "pos": 120}
    assert plain.class_weights is None
    assert json.loads((plain.path / "task.json").read_text())["task"]["class_weights"] is None
    a, b = load_file(str(plain.path / "adapter_model.safetensors")), \
        load_file(str(weighted.path / "adapter_model.safetensors"))
    assert any(not torch.equal(a[k], b[k]) for k in a)


def test_report_matches_the_saved_adapter_and_the_png_is_saved(tiny_distilbert, skewed_task, tmp_path):
    from adapters_kit import MultiTaskModel
    from adapters_kit.tasks.reading import load_splits

    r = train(skewed_task, tmp_path / "a", quick(tiny_distilbert))
    meta = json.loads((r.path / "task.json").read_text())
    assert meta["dev_report"] == r.report and r.report["labels"] == ["neg", "pos"]
    matrix = np.array(r.report["confusion_matrix"])
    assert matrix.sum() == 48 and matrix.sum(1).tolist() == [8, 40]  # rows: true labels
    assert [r.report["per_class"][n]["support"] for n in ("neg", "pos")] == [8, 40]
    assert [r.report["per_class"][n]["predicted"] for n in ("neg", "pos")] == matrix.sum(0).tolist()
    # the report is the saved adapter's, scored again through the engine
    _, dev = load_splits(skewed_task)
    model = MultiTaskModel(tiny_distilbert)
    model.load(r.path)
    assert class_report("classification", ["neg", "pos"], dev.targets,
                        model.logits("skewed", dev.texts[0])) == r.report
    assert (r.path / "confusion.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert (r.path / "curves.png").exists()


def test_a_never_predicted_class_is_warned(tiny_distilbert, tmp_path):
    # 'odd' has 3 training rows whose texts are positive ones: unweighted (an unset class_weights
    # would be balanced: 'odd' is under 5% of the rows), the model cannot tell it apart
    rows = sentiment_rows(96)
    odd = [(t, "odd") for t, y in sentiment_rows(6, seed=5) if y == "pos"]
    train_path = write_tsv(tmp_path / "train.tsv", ["text", "label"], rows + odd)
    dev_path = write_tsv(tmp_path / "dev.tsv", ["text", "label"], sentiment_rows(32, seed=1) + odd[:2])
    spec = TaskSpec(name="odd", labels=["neg", "odd", "pos"], train=str(train_path),
                    dev=str(dev_path), epochs=2, learning_rate=1e-2, batch_size=16, max_length=32,
                    rank=4, class_weights="none")
    with pytest.warns(QualityWarning, match=r"class 'odd' \(3 training rows, 2 evaluation rows\) "
                      "is never predicted"):
        r = train(spec, tmp_path / "a", quick(tiny_distilbert))
    assert r.report["per_class"]["odd"]["predicted"] == 0
    assert r.warnings == json.loads((r.path / "task.json").read_text())["warnings"]
    assert any("'odd'" in w for w in r.warnings)


def test_a_score_below_the_baseline_is_warned(tiny_distilbert, sentiment_task, tmp_path):
    # a learning rate this small leaves the adapter near chance; TF-IDF solves the synthetic task
    with pytest.warns(QualityWarning, match="below the TF-IDF baseline"):
        r = train(sentiment_task, tmp_path / "a", quick(tiny_distilbert, learning_rate=1e-9,
                                                        epochs=0.2, baseline=True))
    assert r.metrics["accuracy"] < r.baseline["accuracy"]


def test_quality_warnings_are_silent_for_a_healthy_report():
    spec = TaskSpec(name="t", labels=["a", "b"], metric="f1_macro")
    report = class_report("classification", ["a", "b"], torch.tensor([0, 1, 1]),
                          torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.0, 1.0]]))
    assert quality_warnings(spec, report, {"a": 3, "b": 5}, {"f1_macro": 1.0}, {"f1_macro": 0.9}) == []
    # a class with no training rows that is never predicted is not news
    report = class_report("classification", ["a", "b"], torch.tensor([0, 0]),
                          torch.tensor([[1.0, 0.0], [1.0, 0.0]]))
    assert quality_warnings(spec, report, {"a": 3, "b": 0}, {"f1_macro": 1.0}, {}) == []
    assert len(quality_warnings(spec, report, {"a": 3, "b": 2}, {"f1_macro": 0.5},
                                {"f1_macro": 0.6})) == 2


def test_progress_events(tiny_distilbert, sentiment_task, tmp_path):
    events = []
    r = train(sentiment_task, tmp_path / "a", quick(tiny_distilbert, epochs=1), on_progress=events.append)
    kinds = [e["event"] for e in events]
    assert kinds[0] == "start" and kinds[-1] == "done"
    evals = [e for e in events if e["event"] == "eval"]
    assert [(e["step"], e["metrics"]["accuracy"]) for e in evals] == [tuple(x) for x in r.history["evals"]]
    json.dumps(events)  # plain data
