"""rsLoRA, LoRA+ and DoRA: trained by `train` and `train_many`, loaded by plain peft; the engine
serves rsLoRA and LoRA+ adapters (plain LoRA at inference) in mixed batches and refuses DoRA."""

from __future__ import annotations

import json

import pytest
import torch
from helpers import quick
from safetensors.torch import load_file

from adapters_kit import AdapterFileError, MultiTaskModel, TrainConfig, TrainJob, train, train_many
from adapters_kit.adapters.store import WEIGHTS
from adapters_kit.errors import ConfigError
from adapters_kit.training.setup import optimizer_for

TEXTS = ["the film was great", "a dull plot and boring music", "superb acting", "tedious"]


def _peft_logits(path, texts=TEXTS):
    from peft import PeftModel
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    base = json.loads((path / "adapter_config.json").read_text())["base_model_name_or_path"]
    n = len(json.loads((path / "task.json").read_text())["task"]["labels"])
    model = PeftModel.from_pretrained(
        AutoModelForSequenceClassification.from_pretrained(base, num_labels=n), str(path)).eval()
    enc = AutoTokenizer.from_pretrained(base)(texts, padding=True, return_tensors="pt")
    with torch.no_grad():
        return model(**enc).logits


@pytest.fixture(scope="module")
def variants(tiny_distilbert, tmp_path_factory):
    """Adapters of one task: plain, rsLoRA, LoRA+ and DoRA (rank 4, alpha 16; DoRA with the
    classifier trained whole, see the next test but one)."""
    from helpers import sentiment_rows, write_tsv

    from adapters_kit import TaskSpec

    root = tmp_path_factory.mktemp("variants")
    train_file = write_tsv(root / "data" / "train.tsv", ["text", "label"], sentiment_rows(96))
    out = {}
    for name, kw in {"plain": {}, "rslora": {"use_rslora": True},
                     "loraplus": {"loraplus_lr_ratio": 16.0},
                     "dora": {"use_dora": True, "head": "full"}}.items():
        spec = TaskSpec(name=f"senti_{name}", labels=["neg", "pos"], train=str(train_file),
                        epochs=1, learning_rate=1e-2, batch_size=16, max_length=32, rank=4,
                        lora_alpha=16, targets="all-linear")
        out[name] = train(spec, root / spec.name, quick(tiny_distilbert, **kw)).path
    return out


def test_configs_record_the_variant_and_plain_peft_loads_each(variants):
    configs = {n: json.loads((p / "adapter_config.json").read_text()) for n, p in variants.items()}
    assert configs["rslora"]["use_rslora"] is True and configs["plain"]["use_rslora"] is False
    assert configs["dora"]["use_dora"] is True
    assert json.loads((variants["loraplus"] / "task.json").read_text())["training"][
        "loraplus_lr_ratio"] == 16.0
    dora = load_file(str(variants["dora"] / WEIGHTS))
    assert any("lora_magnitude_vector" in k for k in dora)  # DoRA's own tensors are saved
    for name, path in variants.items():
        logits = _peft_logits(path)
        assert torch.isfinite(logits).all(), name
    # the variants train differently from plain LoRA on the same seed
    plain = load_file(str(variants["plain"] / WEIGHTS))
    for name in ("rslora", "loraplus"):
        other = load_file(str(variants[name] / WEIGHTS))
        assert any(not torch.equal(plain[k], other[k]) for k in plain), name


def test_engine_serves_rslora_and_loraplus_in_one_mixed_batch_as_peft_does(tiny_distilbert, variants):
    engine = MultiTaskModel(tiny_distilbert)
    names = [engine.load(variants[n]) for n in ("plain", "rslora", "loraplus")]
    mixed = engine.logits_mixed([(name, t) for t in TEXTS for name in names])
    for j, name in enumerate(names):
        want = _peft_logits(variants[name.removeprefix("senti_")])
        got = torch.stack([mixed[i * len(names) + j] for i in range(len(TEXTS))])
        torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-4, msg=name)


def test_engine_refuses_a_dora_adapter_naming_dora_and_the_fix(tiny_distilbert, variants):
    engine = MultiTaskModel(tiny_distilbert)
    with pytest.raises(AdapterFileError, match="DoRA.*plain peft"):
        engine.load(variants["dora"])
    assert engine.tasks == {}


def test_dora_over_the_zero_based_lora_classifier_is_refused_with_the_fix(tiny_distilbert,
                                                                         sentiment_task, tmp_path):
    from adapters_kit import TrainingError

    with pytest.raises(TrainingError, match="head='full'"):
        train(sentiment_task, tmp_path / "d", quick(tiny_distilbert, use_dora=True, epochs=1))
    assert not (tmp_path / "d").exists()


def test_loraplus_trains_the_b_factors_at_ratio_times_the_rate():
    from types import SimpleNamespace

    params = {"x.lora_A.default.weight": torch.nn.Parameter(torch.zeros(4, 8)),
              "x.lora_B.default.weight": torch.nn.Parameter(torch.zeros(8, 4)),
              "h.modules_to_save.default.bias": torch.nn.Parameter(torch.zeros(8))}
    run = SimpleNamespace(learning_rate=1e-3, weight_decay=0.01, loraplus_lr_ratio=16.0)
    groups = optimizer_for(params, run).param_groups
    lrs = {id(p): g["lr"] for g in groups for p in g["params"]}
    assert lrs[id(params["x.lora_B.default.weight"])] == pytest.approx(16e-3)
    assert lrs[id(params["x.lora_A.default.weight"])] == 1e-3
    assert lrs[id(params["h.modules_to_save.default.bias"])] == 1e-3
    plain = optimizer_for(params, SimpleNamespace(learning_rate=1e-3, weight_decay=0.01,
                                                  loraplus_lr_ratio=None)).param_groups
    assert len(plain) == 2 and {g["lr"] for g in plain} == {1e-3}


def test_bad_variant_settings_are_named():
    from adapters_kit import TaskSpec

    with pytest.raises(ConfigError) as e:
        TrainConfig(loraplus_lr_ratio=-2, use_dora="yes").resolved(TaskSpec(name="t", labels=["a", "b"]))
    assert "loraplus_lr_ratio" in str(e.value) and "use_dora" in str(e.value)


def test_train_many_trains_each_variant_as_train_does(tiny_distilbert, sentiment_task, topic_task,
                                                      tmp_path):
    import dataclasses

    def cfg(**kw):
        return quick(tiny_distilbert, dropout=0.0, precision="fp32", epochs=1, **kw)

    topic2 = dataclasses.replace(topic_task, name="tiny_topic_dora")
    jobs = [(sentiment_task, cfg(use_rslora=True, loraplus_lr_ratio=8.0)),
            (topic_task, cfg(use_rslora=True)), (topic2, cfg(use_dora=True, head="full"))]
    many = train_many([TrainJob(s, tmp_path / "many" / s.name, c) for s, c in jobs])
    for spec, c in jobs:
        solo = train(spec, tmp_path / "solo" / spec.name, c)
        ta, tb = load_file(str(solo.path / WEIGHTS)), load_file(str(many[spec.name].path / WEIGHTS))
        assert sorted(ta) == sorted(tb)
        for k in ta:
            torch.testing.assert_close(ta[k], tb[k], rtol=0, atol=2e-5, msg=f"{spec.name} {k}")
