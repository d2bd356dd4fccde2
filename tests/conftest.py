"""Fixtures: tiny DistilBERT/ALBERT backbones and tokenizers built in-process, tiny task data.

Nothing here touches the network: HF_HUB_OFFLINE is set before transformers is imported.
"""

from __future__ import annotations

import os
import random

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import pytest  # noqa: E402
import torch  # noqa: E402
from helpers import WORDS_FILL, WORDS_TOPIC, make_tiny, sentiment_rows, write_tsv  # noqa: E402


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


@pytest.fixture(scope="session")
def tiny_distilbert(tmp_path_factory) -> str:
    return str(make_tiny(tmp_path_factory.mktemp("tiny") / "distilbert", "distilbert"))


@pytest.fixture(scope="session")
def tiny_albert(tmp_path_factory) -> str:
    return str(make_tiny(tmp_path_factory.mktemp("tiny") / "albert", "albert"))


@pytest.fixture(scope="session", params=["distilbert", "albert"])
def tiny_backbone(request, tiny_distilbert, tiny_albert) -> str:
    return tiny_distilbert if request.param == "distilbert" else tiny_albert


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


# The server tests' adapters (every kind, plus broken copies), trained once per session. Defined
# here (at the end: the module imports the helpers above) so both server test modules share it.
from server_adapters import adapters, reference, store  # noqa: E402, F401
