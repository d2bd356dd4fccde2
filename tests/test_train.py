"""Training invariants on tiny in-process backbones."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch
from helpers import quick
from safetensors.torch import load_file

from adapters_kit import AdaptersKitError, Backbone, TrainingError, TrainingInterrupted, train
from adapters_kit.adapters.store import WEIGHTS


def test_trains_only_adapter_and_head_and_base_is_unchanged(tiny_backbone, sentiment_task, tmp_path):
    base = Backbone.resolve(tiny_backbone).load_model(2)
    before = {k: v.clone() for k, v in base.state_dict().items()}
    result = train(sentiment_task, tmp_path / "a", quick(tiny_backbone))
    # the base folder on disk still rebuilds the same weights
    after = Backbone.resolve(tiny_backbone).load_model(2).state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    saved = load_file(str(result.path / WEIGHTS))
    assert saved and all(".lora_" in k for k in saved), sorted(saved)
    assert result.metrics["accuracy"] >= 0.8  # the synthetic task is learnable
    files = {p.name for p in result.path.iterdir()}
    assert {"adapter_config.json", WEIGHTS, "task.json", "checksums.json", "curves.png"} <= files
    assert (result.path / "curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_full_head_design_saves_the_dense_layer(tiny_distilbert, sentiment_task, tmp_path):
    result = train(sentiment_task, tmp_path / "full", quick(tiny_distilbert, head="full", epochs=1))
    saved = load_file(str(result.path / WEIGHTS))
    assert "base_model.model.pre_classifier.weight" in saved
    assert "base_model.model.classifier.weight" in saved


def test_same_seed_same_adapter(tiny_distilbert, sentiment_task, tmp_path):
    a = train(sentiment_task, tmp_path / "a", quick(tiny_distilbert, epochs=1, seed=7))
    b = train(sentiment_task, tmp_path / "b", quick(tiny_distilbert, epochs=1, seed=7))
    c = train(sentiment_task, tmp_path / "c", quick(tiny_distilbert, epochs=1, seed=8))
    ta, tb, tc = (load_file(str(r.path / WEIGHTS)) for r in (a, b, c))
    assert all(torch.equal(ta[k], tb[k]) for k in ta)
    assert any(not torch.equal(ta[k], tc[k]) for k in ta)


def test_resume_after_interruption_gives_the_uninterrupted_result(tiny_distilbert, sentiment_task,
                                                                 tmp_path):
    cfg = dict(epochs=2, evals_per_epoch=3, patience=100)
    full = train(sentiment_task, tmp_path / "full" / "x", quick(tiny_distilbert, **cfg))
    out = tmp_path / "resumed" / "x"
    with pytest.raises(TrainingInterrupted) as stopped:
        train(sentiment_task, out, quick(tiny_distilbert, **cfg), stop_after_step=6)
    # a library error a caller can handle, naming where the run resumes from
    assert isinstance(stopped.value, AdaptersKitError) and not isinstance(stopped.value, KeyboardInterrupt)
    assert stopped.value.step == 6 and stopped.value.total_steps == 12
    assert stopped.value.checkpoint == out.parent / ".checkpoints" / "x"
    assert str(stopped.value.checkpoint) in str(stopped.value)
    assert not out.exists()  # no partial adapter
    assert (out.parent / ".checkpoints" / "x" / "progress.json").exists()
    assert stopped.value.step == 6 and stopped.value.checkpoint == out.parent / ".checkpoints" / "x"
    # tensors in safetensors, the rest in JSON: nothing pickled
    held = sorted(p.name for p in stopped.value.checkpoint.iterdir())
    assert held and all(n.endswith((".safetensors", ".json")) for n in held), held
    resumed = train(sentiment_task, out, quick(tiny_distilbert, **cfg))
    assert json.loads((out / "task.json").read_text())["training"]["steps"] == \
        json.loads((full.path / "task.json").read_text())["training"]["steps"]
    ta, tb = load_file(str(full.path / WEIGHTS)), load_file(str(resumed.path / WEIGHTS))
    for k in ta:
        torch.testing.assert_close(ta[k], tb[k], rtol=0, atol=1e-6)
    assert not (out.parent / ".checkpoints").exists()


def test_refuses_to_overwrite_without_flag(tiny_distilbert, sentiment_task, tmp_path):
    train(sentiment_task, tmp_path / "a", quick(tiny_distilbert, epochs=1))
    with pytest.raises(FileExistsError, match="--overwrite"):
        train(sentiment_task, tmp_path / "a", quick(tiny_distilbert, epochs=1))


def test_early_stopping_and_baseline(tiny_distilbert, sentiment_task, tmp_path):
    r = train(sentiment_task, tmp_path / "a", quick(tiny_distilbert, epochs=20, patience=2,
                                                    evals_per_epoch=1, baseline=True))
    meta = json.loads((r.path / "task.json").read_text())
    assert meta["training"]["stopped_early"] and meta["training"]["steps"] < 20 * 6
    assert 0.0 <= r.baseline["accuracy"] <= 1.0 and "tfidf_baseline" in meta


def test_the_saved_adapter_is_the_best_evaluation(tiny_distilbert, sentiment_task, tmp_path):
    """Best-checkpoint selection: the file holds the best dev state, and reproduces its score."""
    from adapters_kit import MultiTaskModel
    from adapters_kit.tasks.kinds import get_kind
    from adapters_kit.tasks.reading import load_splits

    r = train(sentiment_task, tmp_path / "a", quick(tiny_distilbert, epochs=6, evals_per_epoch=2,
                                                    patience=100, learning_rate=5e-2))
    evals = [v for _, v in r.history["evals"]]
    assert r.metrics["accuracy"] == max(evals)
    best_step = r.history["best_step"]
    assert dict(r.history["evals"])[best_step] == max(evals)
    _, dev = load_splits(sentiment_task)
    model = MultiTaskModel(tiny_distilbert)
    model.load(r.path)
    logits = model.logits("tiny_sentiment", dev.texts[0])
    assert get_kind("classification").score(dev.targets, logits) == pytest.approx(r.metrics, abs=1e-9)


def test_resume_after_a_non_improving_evaluation_keeps_the_best_weights(tiny_distilbert,
                                                                        sentiment_task, tmp_path):
    """The interruption falls after the best evaluation and after a later one that did not
    improve: the resumed run must still save the best step's weights, as the uninterrupted one."""
    cfg = dict(epochs=4, evals_per_epoch=3, patience=100, learning_rate=5e-2)
    full = train(sentiment_task, tmp_path / "full" / "x", quick(tiny_distilbert, **cfg))
    best, steps = full.history["best_step"], [s for s, _ in full.history["evals"]]
    later = [s for s in steps if s > best]
    assert len(later) >= 2, f"no non-improving evaluation after the best one: {full.history}"
    out = tmp_path / "resumed" / "x"
    with pytest.raises(TrainingInterrupted):  # after a non-improving evaluation, not at the end
        train(sentiment_task, out, quick(tiny_distilbert, **cfg), stop_after_step=later[0])
    resumed = train(sentiment_task, out, quick(tiny_distilbert, **cfg))
    meta_full = json.loads((full.path / "task.json").read_text())
    meta_resumed = json.loads((out / "task.json").read_text())
    assert meta_resumed["training"]["best_step"] == best
    assert meta_resumed["metrics"] == meta_full["metrics"]
    ta, tb = load_file(str(full.path / WEIGHTS)), load_file(str(resumed.path / WEIGHTS))
    assert ta.keys() == tb.keys()
    for k in ta:
        torch.testing.assert_close(ta[k], tb[k], rtol=0, atol=1e-6)


def test_base_weights_that_would_train_are_refused_even_under_python_O():
    """The check is a real one: an `assert` would vanish under `python -O`."""
    from adapters_kit.training.setup import trainable as _trainable

    model = torch.nn.Sequential(torch.nn.Linear(2, 2))
    with pytest.raises(TrainingError, match="base weights would be trained"):
        _trainable(model)
    code = ("import torch\nfrom adapters_kit.errors import TrainingError\n"
            "from adapters_kit.training.setup import trainable as _trainable\n"
            "try:\n    _trainable(torch.nn.Linear(2, 2))\nexcept TrainingError as e:\n"
            "    print('refused:', e)\n")
    out = subprocess.run([sys.executable, "-O", "-c", code], capture_output=True, text=True,
                         timeout=300)
    assert out.returncode == 0, out.stderr
    assert "base weights would be trained (weight, bias)" in out.stdout


def test_stop_after_step_is_an_error_a_library_user_can_catch(tiny_distilbert, sentiment_task,
                                                              tmp_path):
    from adapters_kit import AdaptersKitError

    out = tmp_path / "stopped" / "x"
    try:
        train(sentiment_task, out, quick(tiny_distilbert, epochs=1, evals_per_epoch=2),
              stop_after_step=1)
    except AdaptersKitError as e:  # not a KeyboardInterrupt: `except Exception` handles it
        assert isinstance(e, TrainingInterrupted) and e.step == 1
        assert e.checkpoint is None or (e.checkpoint / "progress.json").exists()
        assert ("resume" in str(e)) if e.checkpoint else ("afresh" in str(e))  # what comes next
    else:
        raise AssertionError("stop_after_step did not stop the run")
    assert not out.exists()
