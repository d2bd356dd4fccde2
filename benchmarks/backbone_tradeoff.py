"""Speed versus size of the two architectures, measured side by side in one run.

    python benchmarks/backbone_tradeoff.py

Shapes of the real checkpoints (randomly initialised: weights do not change speed or size):
distilbert-base-uncased (6 layers, 768 wide) and albert-base-v2 (one 768-wide layer shared
12 times, 128-wide embeddings); and the two embedded backbones. For each: parameters, bytes on
disk, inference rows/s (B=32, L=128) and LoRA training rows/s (q/v, B=32, L=64), with the
ratio to distilbert-base measured in the same run. The last line is one JSON object.
"""

from __future__ import annotations

import os
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402
from _common import emit, median_seconds, temp_dir  # noqa: E402

from adapters_kit.backbones import Backbone  # noqa: E402
from adapters_kit.training.loop import lora_config  # noqa: E402


def shaped(work: Path, arch: str) -> Path:
    from transformers import AlbertConfig, AlbertModel, DistilBertConfig, DistilBertModel

    torch.manual_seed(0)
    model = DistilBertModel(DistilBertConfig()) if arch == "distilbert" else AlbertModel(
        AlbertConfig(embedding_size=128, hidden_size=768, num_hidden_layers=12, num_hidden_groups=1,
                     num_attention_heads=12, intermediate_size=3072, vocab_size=30000))
    folder = work / f"{arch}-base-shape"
    model.save_pretrained(str(folder))
    from adapters_kit.backbones.embedded import embedded_dir

    src = embedded_dir("embedded-distilbert")
    for f in ("tokenizer.json", "tokenizer_config.json", "vocab.txt", "special_tokens_map.json"):
        (folder / f).write_bytes((src / f).read_bytes())
    return folder


def rows_per_second(fn, rows: int, reps: int = 5) -> float:
    return rows / median_seconds(fn, reps)


def measure(name: str, label: str) -> dict:
    from peft import get_peft_model

    bb = Backbone.resolve(name)
    model = bb.load_model(2)
    params = sum(p.numel() for n, p in model.named_parameters() if not n.startswith("classifier"))
    disk = (bb.path / "model.safetensors").stat().st_size
    vocab = min(model.config.vocab_size, 30000)
    ids = torch.randint(1000, vocab, (32, 128))

    def infer():
        with torch.inference_mode():
            model(input_ids=ids)

    infer_rps = rows_per_second(infer, 32)
    cfg = {"targets": "qv", "head": "lora", "rank": 8, "lora_alpha": 16, "lora_dropout": 0.1}
    peft_model = get_peft_model(bb.load_model(2), lora_config(bb.arch, 2, cfg)).train()
    opt = torch.optim.AdamW([p for p in peft_model.parameters() if p.requires_grad], lr=1e-3)
    short = ids[:, :64]
    labels = torch.randint(0, 2, (32,))

    def step():
        loss = torch.nn.functional.cross_entropy(peft_model(input_ids=short).logits, labels)
        loss.backward()
        opt.step()
        opt.zero_grad()

    train_rps = rows_per_second(step, 32, reps=3)
    row = {"backbone": label, "params_m": round(params / 1e6, 1), "disk_mb": round(disk / 1e6, 1),
           "infer_rows_per_s": round(infer_rps, 1), "train_rows_per_s": round(train_rps, 1)}
    print(f"{label:<28} {row['params_m']:>6.1f} M params {row['disk_mb']:>7.1f} MB on disk "
          f"{infer_rps:>7.1f} rows/s inference {train_rps:>6.1f} rows/s LoRA training", flush=True)
    return row


def main() -> None:
    work = temp_dir("tradeoff-")
    rows = [measure(str(shaped(work, "distilbert")), "distilbert-base-uncased shape"),
            measure(str(shaped(work, "albert")), "albert-base-v2 shape"),
            measure("embedded-distilbert", "embedded-distilbert"),
            measure("embedded-albert", "embedded-albert (unshared)")]
    ref = rows[0]
    for r in rows:
        r["disk_vs_distilbert_base"] = round(r["disk_mb"] / ref["disk_mb"], 3)
        r["infer_speed_vs_distilbert_base"] = round(r["infer_rows_per_s"] / ref["infer_rows_per_s"], 3)
    emit({"backbones": rows})


if __name__ == "__main__":
    main()
