"""Fixtures: tiny DistilBERT/ALBERT backbones and tokenizers built in-process, tiny task data.

Nothing here touches the network: HF_HUB_OFFLINE is set before transformers is imported.
"""

from __future__ import annotations

import os
import random
from pathlib import Path

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import pytest  # noqa: E402
import torch  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
SHARED = Path(os.environ.get("ADAPTERS_KIT_SHARED_DATA", ROOT.parent / "shared" / "data"))

WORDS_POS = "great lovely wonderful superb charming delightful brilliant moving".split()
WORDS_NEG = "awful dull boring terrible clumsy tedious bland painful".split()
WORDS_TOPIC = "film story acting plot music scenes ending cast".split()
WORDS_FILL = "the a this was is and very quite really its".split()


def pytest_collection_modifyitems(config, items):
    """`gpu` tests need CUDA: without it they are skipped, saying so."""
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs CUDA (torch.cuda.is_available() is False here)")
    for item in items:
        if item.get_closest_marker("gpu"):  # not `keywords`: a parameter id may read "gpu"
            item.add_marker(skip)


@pytest.fixture(autouse=True)
def _torch_threads():
    """Each test starts with the session's torch thread count: a server's engine thread sets
    the process-wide count, which would otherwise carry over to whichever test runs next."""
    import torch

    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session", autouse=True)
def _cache(tmp_path_factory):
    """One cache of converted and materialised bases for the whole session."""
    cache = os.environ.get("ADAPTERS_KIT_TEST_CACHE") or str(tmp_path_factory.mktemp("cache"))
    os.environ["ADAPTERS_KIT_CACHE"] = cache
    yield


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


@pytest.fixture(scope="session")
def tiny_distilbert(tmp_path_factory) -> str:
    return str(make_tiny(tmp_path_factory.mktemp("tiny") / "distilbert", "distilbert"))


@pytest.fixture(scope="session")
def tiny_albert(tmp_path_factory) -> str:
    return str(make_tiny(tmp_path_factory.mktemp("tiny") / "albert", "albert"))


@pytest.fixture(scope="session", params=["distilbert", "albert"])
def tiny_backbone(request, tiny_distilbert, tiny_albert) -> str:
    return tiny_distilbert if request.param == "distilbert" else tiny_albert


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


@pytest.fixture()
def sentiment_task(tmp_path):
    """A registered-looking TaskSpec over a tiny synthetic TSV (not added to the registry)."""
    from adapters_kit import TaskSpec

    train = write_tsv(tmp_path / "data" / "train.tsv", ["text", "label"], sentiment_rows(96))
    dev = write_tsv(tmp_path / "data" / "dev.tsv", ["text", "label"], sentiment_rows(32, seed=1))
    return TaskSpec(name="tiny_sentiment", labels=["neg", "pos"], train=str(train), dev=str(dev),
                    epochs=6, learning_rate=1e-2, batch_size=16, max_length=32, rank=4,
                    targets="all-linear")


@pytest.fixture()
def topic_task(tmp_path):
    """A second task with a different label count, for multi-adapter tests."""
    from adapters_kit import TaskSpec

    rng = random.Random(3)
    rows = [(f"{rng.choice(WORDS_FILL)} {t} {rng.choice(WORDS_TOPIC)}", t)
            for t in ("film", "music", "plot") for _ in range(24)]
    rng.shuffle(rows)
    path = write_tsv(tmp_path / "data" / "topic.tsv", ["text", "topic"], rows)
    return TaskSpec(name="tiny_topic", labels=["film", "music", "plot"], label_field="topic",
                    train=str(path), dev_fraction=0.25, epochs=2, learning_rate=5e-3,
                    batch_size=16, max_length=32, rank=4)


def quick(backbone: str, **kw):
    """A TrainConfig for fast tests."""
    from adapters_kit import TrainConfig

    return TrainConfig(backbone=backbone, progress=False, baseline=kw.pop("baseline", False), **kw)


def needs_shared(*parts: str) -> Path:
    path = SHARED.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"{path} not found (shared data sits beside the checkout)")
    return path


# The server tests' adapters (every kind, plus broken copies), trained once per session. Defined
# here (at the end: the module imports the helpers above) so both server test modules share it.
from server_adapters import adapters, reference, store  # noqa: E402, F401
