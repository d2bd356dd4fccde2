"""Quantized bases (bitsandbytes): QLoRA training, the engine on an 8-bit and a 4-bit base
against plain peft on the same quantized model, adapters across bases, the 8-bit AdamW."""

from __future__ import annotations

import json
import logging
import os
import sys

import pytest
import torch
from helpers import ROOT, needs_shared, quick

from adapters_kit import MultiTaskModel, train
from adapters_kit.backbones import Backbone
from adapters_kit.backbones.quantize import Quantization, quantized_layers, require_bitsandbytes
from adapters_kit.engine.quantized_bank import QuantizedBankLinear
from adapters_kit.errors import BackboneError, ConfigError

pytest.importorskip("bitsandbytes")

MODES = ["8bit", "4bit"]
TEXTS = ["music", "the film was great lovely superb charming", "a plot was dull",
         "this cast was bland and the ending was tedious awful", "its story"]
# Mixed batch against each task alone through plain peft, on the same quantized model. Both run
# bitsandbytes' kernel on the same quantized weights for every base layer; what differs is the
# batch (rows, padding) and the order of the LoRA sums. 4-bit dequantizes its weights and runs
# an fp32 GEMM: row by row the same arithmetic, so fp32 rounding (1e-5, as on the fp32 base).
# 8-bit (LLM.int8) casts its input to fp16, quantizes activations to int8 and runs apart, in
# fp16, the columns where some value of the *batch* passes the 6.0 outlier threshold, so a
# row's answer moves with its batch mates. Measured on this tiny base (activations of order 10,
# where int8 rounds hardest): 1.8e-3 for a mixed batch, 1.3e-2 (6% of a logit) for 8 copies of
# one row against that row alone. The 8-bit bound, 2e-2, is set from that measurement; why the
# single-task batch moves more than the fp16 rounding explains was not pinned down.
ATOL = {"8bit": 2e-2, "4bit": 1e-5}


def peft_on(path, mode: str | None):
    """Plain peft: the adapter loaded onto the base as a peft user builds it (quantized by
    transformers' BitsAndBytesConfig when `mode` is set)."""
    from peft import PeftModel
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    base = json.loads((path / "adapter_config.json").read_text())["base_model_name_or_path"]
    n = len(json.loads((path / "task.json").read_text())["task"]["labels"])
    kwargs = {}
    quant = Quantization.of(mode)
    if quant is not None:
        kwargs = quant.load_kwargs()
    model = AutoModelForSequenceClassification.from_pretrained(base, num_labels=n, **kwargs)
    if quant is not None:
        quant.finish(model)
    return PeftModel.from_pretrained(model, str(path)).eval(), AutoTokenizer.from_pretrained(base)


@pytest.fixture(scope="module")
def qlora(tiny_distilbert, tmp_path_factory):
    """Per mode: a sentiment and a topic adapter trained on that quantized base."""
    from helpers import sentiment_rows, write_tsv

    from adapters_kit import TaskSpec

    root = tmp_path_factory.mktemp("qlora")
    train_tsv = write_tsv(root / "data" / "train.tsv", ["text", "label"], sentiment_rows(96))
    dev_tsv = write_tsv(root / "data" / "dev.tsv", ["text", "label"], sentiment_rows(32, seed=1))
    sentiment = TaskSpec(name="tiny_sentiment", labels=["neg", "pos"], train=str(train_tsv),
                         dev=str(dev_tsv), epochs=6, learning_rate=1e-2, batch_size=16,
                         max_length=32, rank=4, targets="all-linear")
    import random

    from helpers import WORDS_FILL, WORDS_TOPIC

    rng = random.Random(3)
    rows = [(f"{rng.choice(WORDS_FILL)} {t} {rng.choice(WORDS_TOPIC)}", t)
            for t in ("film", "music", "plot") for _ in range(24)]
    rng.shuffle(rows)
    topic = TaskSpec(name="tiny_topic", labels=["film", "music", "plot"], label_field="topic",
                     train=str(write_tsv(root / "data" / "topic.tsv", ["text", "topic"], rows)),
                     dev_fraction=0.25, epochs=2, learning_rate=5e-3, batch_size=16, max_length=32,
                     rank=4)
    out = {}
    for mode in MODES:
        out[mode] = {spec.name: train(spec, root / mode / spec.name,
                                      quick(tiny_distilbert, quantize=mode)) for spec in (sentiment, topic)}
    out["fp32"] = {sentiment.name: train(sentiment, root / "fp32" / sentiment.name, quick(tiny_distilbert))}
    return out


@pytest.mark.parametrize("mode", MODES)
def test_qlora_trains_well_above_chance_and_records_the_unquantized_base(qlora, tiny_distilbert, mode):
    result = qlora[mode]["tiny_sentiment"]
    # chance is 0.5; fp32 reaches 1.0 here. The tiny random base (initializer_range 0.3) has
    # large activations, which LLM.int8 rounds hardest: 8-bit gave 0.84
    assert result.metrics["accuracy"] >= 0.75, result.metrics
    meta = json.loads((result.path / "task.json").read_text())
    assert meta["backbone"]["quantization"]["mode"] == mode
    assert meta["training"]["quantize"] == mode
    fp32 = json.loads((qlora["fp32"]["tiny_sentiment"].path / "task.json").read_text())
    assert meta["backbone"]["fingerprint"] == fp32["backbone"]["fingerprint"]  # the fp32 base's
    assert "quantization" not in fp32["backbone"]


@pytest.mark.parametrize("mode", MODES)
def test_plain_peft_on_the_quantized_base_reproduces_the_training_score(qlora, mode):
    """Plain peft loads a QLoRA adapter onto the same quantized base and gives the outputs the
    run scored: its dev accuracy, recomputed the way training evaluates, is the one recorded."""
    from adapters_kit.tasks.kinds import kind_of
    from adapters_kit.training.evaluate import predict_outputs

    result = qlora[mode]["tiny_sentiment"]
    model, tok = peft_on(result.path, mode)
    assert quantized_layers(model), "the peft model's base is not quantized"
    spec = json.loads((result.path / "task.json").read_text())["task"]
    dev = [line.split("\t") for line in open(spec["dev"]).read().splitlines()[1:]]
    ids = [tok(t, truncation=True, max_length=32)["input_ids"] for t, _ in dev]
    outs = predict_outputs(model, kind_of("classification"), ids, tok.pad_token_id)
    acc = sum(int(o.argmax()) == ["neg", "pos"].index(y) for o, (_, y) in zip(outs, dev)) / len(dev)
    assert acc == result.metrics["accuracy"]


@pytest.mark.parametrize("mode", MODES)
def test_a_mixed_batch_on_a_quantized_base_equals_plain_peft_per_task(qlora, tiny_distilbert, mode):
    engine = MultiTaskModel(tiny_distilbert, quantize=mode)
    assert quantized_layers(engine.model)
    for name, result in qlora[mode].items():
        engine.load(result.path, name=name)
    requests = [(name, t) for t in TEXTS for name in qlora[mode]]
    out = engine.logits_mixed(requests)
    for name, result in qlora[mode].items():
        model, tok = peft_on(result.path, mode)
        for (req, text), row in zip(requests, out):
            if req == name:
                with torch.no_grad():
                    ref = model(**tok(text, return_tensors="pt")).logits[0]
                torch.testing.assert_close(row, ref, rtol=0, atol=ATOL[mode])
    # one task, a batch long enough that an fp32 layer would merge its adapter into the weight:
    # the quantized layers take the two-factor path (their weight is integer), same answers
    many = [TEXTS[3]] * 8
    single = engine.logits("tiny_sentiment", many)
    model, tok = peft_on(qlora[mode]["tiny_sentiment"].path, mode)
    with torch.no_grad():
        ref = model(**tok(TEXTS[3], return_tensors="pt")).logits[0]
    torch.testing.assert_close(single, ref.expand_as(single), rtol=0, atol=ATOL[mode])
    banks = [b for b in engine.banks.values() if isinstance(b, QuantizedBankLinear)]
    assert banks and not any(b.merges_for(10**6) for b in banks)
    assert any(b.merges_for(10**6) for b in engine.banks.values()
               if not isinstance(b, QuantizedBankLinear))  # the head's fp32 dense layer may


def test_adapters_serve_across_bases_with_a_logged_note(qlora, tiny_distilbert, caplog):
    """A QLoRA adapter on the full-precision base, a full-precision one on a 4-bit base, a
    4-bit one on an 8-bit base: the same base's weights, so each loads, with a note, and gives
    what plain peft gives with that adapter on that base. (Whether the answers stay as good is
    a question of accuracy, measured on SST-2 in the README, not of arithmetic.)"""
    cases = [(None, qlora["4bit"]["tiny_sentiment"]), ("4bit", qlora["fp32"]["tiny_sentiment"]),
             ("8bit", qlora["4bit"]["tiny_sentiment"])]
    for mode, result in cases:
        engine = MultiTaskModel(tiny_distilbert, quantize=mode)
        with caplog.at_level(logging.INFO, logger="adapters_kit.engine"):
            caplog.clear()
            engine.load(result.path)
        assert any("was trained on" in r.getMessage() for r in caplog.records)
        model, tok = peft_on(result.path, mode)
        out = engine.logits("tiny_sentiment", TEXTS)
        with torch.no_grad():
            ref = torch.cat([model(**tok(t, return_tensors="pt")).logits for t in TEXTS])
        torch.testing.assert_close(out, ref, rtol=0, atol=ATOL.get(mode, 1e-5))
    engine = MultiTaskModel(tiny_distilbert, quantize="4bit")
    with caplog.at_level(logging.INFO, logger="adapters_kit.engine"):
        caplog.clear()
        engine.load(qlora["4bit"]["tiny_sentiment"].path)  # same base, same quantization: no note
    assert not any("was trained on" in r.getMessage() for r in caplog.records)


def test_adamw8bit_trains(tiny_distilbert, sentiment_task, tmp_path):
    import bitsandbytes as bnb

    from adapters_kit.training.config import TrainConfig
    from adapters_kit.training.setup import optimizer_for

    run = TrainConfig(backbone=tiny_distilbert, optim="adamw8bit").resolved(sentiment_task)
    big = torch.nn.Parameter(torch.zeros(64, 128))  # >= 4,096 values: 8-bit moments
    opt = optimizer_for({"w": big}, run)
    assert isinstance(opt, bnb.optim.AdamW8bit)
    result = train(sentiment_task, tmp_path / "a", quick(tiny_distilbert, optim="adamw8bit",
                                                          quantize="8bit"))
    assert result.metrics["accuracy"] >= 0.75


def test_bad_settings_are_refused_by_name(tiny_distilbert, sentiment_task, tmp_path):
    for kw, word in (({"quantize": "3bit"}, "quantize"), ({"double_quant": True}, "double_quant"),
                     ({"quantize": "8bit", "double_quant": True}, "double_quant"),
                     ({"optim": "sgd"}, "optim")):
        with pytest.raises(ConfigError, match=word):
            train(sentiment_task, tmp_path / "x", quick(tiny_distilbert, **kw))
    with pytest.raises(BackboneError, match="quantize"):
        Quantization.of("2bit")
    with pytest.raises(ValueError, match="fp32"):
        MultiTaskModel(tiny_distilbert, quantize="8bit", precision="bf16")


def test_without_bitsandbytes_the_error_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "bitsandbytes", None)  # import fails as if not installed
    with pytest.raises(BackboneError, match=r"adapters-kit\[quant\]"):
        require_bitsandbytes()


def test_a_4bit_layer_is_exactly_a_linear_on_its_dequantized_weight(tiny_distilbert):
    """Forward and input gradient of each 4-bit linear equal a float Linear holding its
    dequantized weight, in training and after an evaluation forward (which, without
    keep_4bit_layout, repacks the weight for an inference kernel with another result and no
    backward): a QLoRA run that diverges is the base's doing, not wrong gradients."""
    import bitsandbytes as bnb

    model = Backbone.resolve(tiny_distilbert).load_model(2, quantize=Quantization.of("4bit"))
    layers = dict(model.named_modules())
    torch.manual_seed(0)
    for name in quantized_layers(model):
        q = layers[name]
        ref = torch.nn.Linear(q.in_features, q.out_features)
        with torch.no_grad():
            ref.weight.copy_(bnb.functional.dequantize_4bit(q.weight.data, q.weight.quant_state))
            ref.bias.copy_(q.bias)
        for phase in ("train", "after an evaluation"):
            if phase != "train":
                model.eval()
                with torch.no_grad():
                    q(torch.randn(3, q.in_features))
                model.train()
            x = torch.randn(2, 5, q.in_features, requires_grad=True)
            x_ref = x.detach().clone().requires_grad_(True)
            y, y_ref = q(x), ref(x_ref)
            g = torch.randn_like(y)
            (y * g).sum().backward()
            (y_ref * g).sum().backward()
            assert torch.allclose(y, y_ref, atol=1e-6), (name, phase)
            assert torch.allclose(x.grad, x_ref.grad, atol=1e-6), (name, phase)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/self/maps")
@pytest.mark.parametrize("mode", MODES)
def test_a_quantized_base_lets_go_of_the_checkpoints_memory_map(tiny_distilbert, mode):
    """Once quantized, no tensor is a view of the fp32 checkpoint's memory map, so the map (and
    the pages quantizing read, counted in RSS) goes; an fp32 base keeps its views. In a fresh
    process: no other model of this base may hold the map there."""
    import subprocess

    code = f"""
import gc, os
from adapters_kit.backbones import Backbone
from adapters_kit.backbones.quantize import Quantization
def mapped():
    return sorted({{l.split()[-1] for l in open("/proc/self/maps") if l.rstrip().endswith(".safetensors")}})
bb = Backbone.resolve({tiny_distilbert!r})
full = bb.load_model(2)
gc.collect()
print("fp32", len(mapped()))
del full
gc.collect()
quantized = bb.load_model(2, quantize=Quantization.of({mode!r}))
gc.collect()
print("{mode}", len(mapped()), mapped())
"""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(ROOT)}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env,
                         timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    lines = dict(line.split(" ", 1) for line in out.stdout.splitlines())
    assert int(lines["fp32"]) >= 1  # the check sees a map where one is held
    assert lines[mode].startswith("0 "), lines[mode]


def test_quantized_base_keeps_the_head_in_full_precision(tiny_distilbert, tiny_albert):
    for folder, head in ((tiny_distilbert, ("pre_classifier", "classifier")),
                         (tiny_albert, ("albert.pooler", "classifier"))):
        bb = Backbone.resolve(folder)
        for mode in MODES:
            model = bb.load_model(2, quantize=mode)
            layers = quantized_layers(model)
            assert layers and not [p for p in layers if p.startswith(head)]
            for name in head:
                assert model.get_submodule(name).weight.dtype == torch.float32
            assert model.get_input_embeddings().weight.dtype == torch.bfloat16
            assert model.get_memory_footprint() < bb.load_model(2).get_memory_footprint()


@pytest.mark.slow
@pytest.mark.parametrize("mode", [pytest.param("4bit", marks=pytest.mark.smoke), "8bit"])
def test_qlora_on_the_embedded_backbone_learns_the_demo_task(tmp_path, mode):
    """The bundled demo card (support_urgency, 2 labels) on the real embedded backbone."""
    result = train("support_urgency", tmp_path / mode,
                   quick("embedded-distilbert", quantize=mode, epochs=2))
    assert result.metrics["accuracy"] >= 0.8, result.metrics  # chance is 0.5


@pytest.mark.slow
def test_qlora_sst2_subset_on_the_embedded_backbone(tmp_path):
    needs_shared("sst2", "train.tsv")
    result = train("sst2", tmp_path / "sst2", quick("embedded-distilbert", quantize="4bit",
                                                     max_train_examples=2000, epochs=1))
    assert result.metrics["accuracy"] >= 0.75
