"""The embedded backbones, built from the real all-MiniLM-L6-v2 weights (slow tier)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch

pytestmark = pytest.mark.slow


@pytest.mark.smoke
@pytest.mark.parametrize("name", ["embedded-distilbert", "embedded-albert"])
def test_conversion_matches_the_source_bert(name):
    from transformers import AutoModel, AutoTokenizer, BertModel

    from adapters_kit.backbones.embedded import embedded_dir, source_dir

    folder = embedded_dir(name)
    tok = AutoTokenizer.from_pretrained(str(folder))
    bert = BertModel.from_pretrained(str(source_dir())).eval()
    ours = AutoModel.from_pretrained(str(folder)).eval()
    assert ours.config.model_type == name.removeprefix("embedded-")
    batch = tok(["A man is playing a guitar on stage.", "short", "the cat sat on the mat again"],
                padding=True, return_tensors="pt")
    with torch.no_grad():
        ref = bert(**batch).last_hidden_state
        got = ours(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).last_hidden_state
    mask = batch["attention_mask"].bool()
    assert (ref - got)[mask].abs().max() < 1e-4


def test_conversion_cache_survives_a_crash_mid_write(tmp_path, monkeypatch):
    from adapters_kit import embedded

    monkeypatch.setenv("ADAPTERS_KIT_CACHE", str(tmp_path))

    def crash(name, target):
        (target / "model.safetensors").write_bytes(b"partial")
        raise RuntimeError("killed mid-write")

    real = embedded.convert
    monkeypatch.setattr(embedded, "convert", crash)
    with pytest.raises(RuntimeError):
        embedded.embedded_dir("embedded-distilbert")
    assert not (tmp_path / "backbones" / "embedded-distilbert-v1").exists()
    monkeypatch.setattr(embedded, "convert", real)
    folder = embedded.embedded_dir("embedded-distilbert")
    assert (folder / embedded.BASE_INFO).exists()
    assert json.loads((folder / "config.json").read_text())["model_type"] == "distilbert"


@pytest.mark.smoke
def test_plain_peft_matches_cli_predict_on_the_embedded_base(tmp_path):
    """The interoperability promise, as a user's own code would check it."""
    from peft import PeftModel
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from adapters_kit import resolve_base

    out = tmp_path / "support_intent"
    cli = [sys.executable, "-m", "adapters_kit.cli"]
    subprocess.run([*cli, "train", "support_intent", "--out", str(out), "--epochs", "1",
                    "--max-train-examples", "160", "--json"], check=True, capture_output=True,
                   timeout=900)
    texts = ["I was charged twice for one order", "my parcel is lost", "cannot log in"]
    proc = subprocess.run([*cli, "predict", str(out), *texts, "--json"], check=True,
                          capture_output=True, text=True, timeout=600)
    ours = json.loads(proc.stdout)["predictions"]

    config = json.loads((out / "adapter_config.json").read_text())
    assert config["base_model_name_or_path"] == "embedded-distilbert"  # portable: a name
    labels = json.loads((out / "task.json").read_text())["task"]["labels"]
    folder = resolve_base(out)  # that name as a base folder on this machine
    base = AutoModelForSequenceClassification.from_pretrained(folder, num_labels=len(labels))
    model = PeftModel.from_pretrained(base, str(out)).eval()
    tok = AutoTokenizer.from_pretrained(folder)
    for text, pred in zip(texts, ours):
        with torch.no_grad():
            probs = model(**tok(text, return_tensors="pt")).logits.softmax(-1)[0]
        for i, label in enumerate(labels):
            assert abs(probs[i].item() - pred["scores"][label]) < 1e-5
    assert (out / "adapter_model.safetensors").stat().st_size <= 350_000


@pytest.mark.smoke
@pytest.mark.parametrize("task", ["sst2", "rte", "mrpc", "ag_news", "sms_spam"])
def test_shared_data_cards_read_their_files(task):
    """Each bundled card reads its real file in ../shared/data: columns, labels, splits."""
    from pathlib import Path

    from adapters_kit import get_task
    from adapters_kit.tasks.reading import load_splits

    spec = get_task(task)
    if not Path(spec.train).exists():
        pytest.skip(f"{spec.train} not found (shared data sits beside the checkout)")
    train, dev = load_splits(spec)
    expected = {"sst2": (67349, 872), "rte": (2490, 277), "mrpc": (4076, 1725),
                "ag_news": (6080, 1520), "sms_spam": (4459, 1115)}[task]
    assert (len(train), len(dev)) == expected
    assert set(train.targets.tolist()) == set(range(len(spec.labels)))
    assert len(train.texts) == len(spec.text_fields)
