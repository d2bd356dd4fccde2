"""Helpers the tests import: paths, synthetic text, tiny backbones built in-process, quick
training settings. (Fixtures stay in conftest.py.)"""

from __future__ import annotations

import os
import random
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parent.parent
SHARED = Path(os.environ.get("ADAPTERS_KIT_SHARED_DATA", ROOT.parent / "shared" / "data"))

WORDS_POS = "great lovely wonderful superb charming delightful brilliant moving".split()
WORDS_NEG = "awful dull boring terrible clumsy tedious bland painful".split()
WORDS_TOPIC = "film story acting plot music scenes ending cast".split()
WORDS_FILL = "the a this was is and very quite really its".split()


def _vocab() -> list[str]:
    special = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    words = sorted(set(WORDS_POS + WORDS_NEG + WORDS_TOPIC + WORDS_FILL))
    return special + words + list("abcdefghijklmnopqrstuvwxyz0123456789.,!?'")


def _tokenizer(folder: Path):
    from transformers import BertTokenizer

    tok = BertTokenizer(vocab={w: i for i, w in enumerate(_vocab())}, do_lower_case=True)
    assert tok.unk_token_id not in tok("the film was great")["input_ids"]
    tok.save_pretrained(str(folder))
    return tok


def make_tiny(folder: Path, arch: str = "distilbert", seed: int = 0, dim: int = 32) -> Path:
    """Save a tiny random model folder of `arch` with its tokenizer; return the folder."""
    from transformers import (
        AlbertConfig,
        AlbertModel,
        BertConfig,
        BertModel,
        DistilBertConfig,
        DistilBertModel,
    )

    folder.mkdir(parents=True, exist_ok=True)
    _tokenizer(folder)
    torch.manual_seed(seed)
    vocab = len(_vocab())
    if arch == "distilbert":
        model = DistilBertModel(DistilBertConfig(vocab_size=vocab, dim=dim, hidden_dim=2 * dim,
                                                 n_layers=2, n_heads=2, max_position_embeddings=64,
                                                 initializer_range=0.3))
    elif arch == "albert":
        # Like albert-base-v2: one shared layer applied at every depth.
        model = AlbertModel(AlbertConfig(vocab_size=vocab, embedding_size=16, hidden_size=dim,
                                         intermediate_size=2 * dim, num_hidden_layers=3,
                                         num_hidden_groups=1, num_attention_heads=2,
                                         max_position_embeddings=64, initializer_range=0.3))
    else:
        model = BertModel(BertConfig(vocab_size=vocab, hidden_size=dim, num_hidden_layers=1,
                                     num_attention_heads=2, intermediate_size=2 * dim))
    model.save_pretrained(str(folder))
    return folder


def sentiment_rows(n: int, seed: int = 0) -> list[tuple[str, str]]:
    """Synthetic sentiment rows a tiny model can learn: (text, 'pos'|'neg')."""
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        label = "pos" if i % 2 == 0 else "neg"
        words = rng.sample(WORDS_POS if label == "pos" else WORDS_NEG, 2)
        text = " ".join([rng.choice(WORDS_FILL), rng.choice(WORDS_TOPIC), "was", *words])
        rows.append((text, label))
    return rows


def write_tsv(path: Path, header: list[str], rows: list[tuple]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = ["\t".join(header)] + ["\t".join(map(str, r)) for r in rows]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def quick(backbone: str, **kw):
    """A TrainConfig for fast tests."""
    from adapters_kit import TrainConfig

    return TrainConfig(backbone=backbone, progress=False, baseline=kw.pop("baseline", False), **kw)


def needs_shared(*parts: str) -> Path:
    path = SHARED.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"{path} not found (shared data sits beside the checkout)")
    return path
