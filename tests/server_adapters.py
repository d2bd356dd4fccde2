"""Real adapters of every kind for the server tests, trained once per test session.

Registered as a fixture in conftest.py, so test_server.py and test_ray_serve.py share one
training instead of each module training its own copy.
"""

from __future__ import annotations

import json
import random
import shutil
from pathlib import Path

import pytest
from helpers import WORDS_FILL, WORDS_NEG, WORDS_POS, WORDS_TOPIC, quick, sentiment_rows, write_tsv
from test_ner_qa import ner_rows, squad_json

from adapters_kit import MultiTaskModel, TaskSpec, train
from adapters_kit.adapters.store import WEIGHTS, write_checksums

GOOD = ["tiny_sentiment", "tiny_topic", "tiny_pair", "tiny_ner", "tiny_qa"]
BAD = ["bad_corrupt", "bad_truncated", "bad_foreign", "bad_pickle"]


def _specs(data: Path) -> list[TaskSpec]:
    rng = random.Random(5)
    train_rows = sentiment_rows(96)
    sent = TaskSpec(name="tiny_sentiment", labels=["neg", "pos"],
                    train=str(write_tsv(data / "sent.tsv", ["text", "label"], train_rows)),
                    dev_fraction=0.25, epochs=1, learning_rate=1e-2, batch_size=16, max_length=32,
                    rank=4)
    topic_rows = [(f"{rng.choice(WORDS_FILL)} {t} {rng.choice(WORDS_TOPIC)}", t)
                  for t in ("film", "music", "plot") for _ in range(16)]
    topic = TaskSpec(name="tiny_topic", labels=["film", "music", "plot"], label_field="topic",
                     train=str(write_tsv(data / "topic.tsv", ["text", "topic"], topic_rows)),
                     dev_fraction=0.25, epochs=1, learning_rate=1e-2, batch_size=16, max_length=32,
                     rank=4)
    pair_rows = []
    for _ in range(64):
        a, b = rng.choice(WORDS_POS + WORDS_NEG), rng.choice(WORDS_POS + WORDS_NEG)
        pair_rows.append((f"the film was {a}", f"it was {b}",
                          "same" if (a in WORDS_POS) == (b in WORDS_POS) else "differ"))
    pair = TaskSpec(name="tiny_pair", labels=["differ", "same"], text_fields=["a", "b"],
                    train=str(write_tsv(data / "pair.tsv", ["a", "b", "label"], pair_rows)),
                    dev_fraction=0.25, epochs=1, learning_rate=1e-2, batch_size=16, max_length=32,
                    rank=4)
    for name, rows in (("ner_train", ner_rows(48)), ("ner_dev", ner_rows(16, seed=1))):
        (data / f"{name}.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    ner = TaskSpec(name="tiny_ner", kind="token-classification", labels=["O", "B-ITEM", "I-ITEM"],
                   train=str(data / "ner_train.jsonl"), dev=str(data / "ner_dev.jsonl"), epochs=1,
                   learning_rate=1e-2, batch_size=16, max_length=32, rank=4)
    (data / "squad.json").write_text(json.dumps(squad_json(4, 12, long=True)))
    qa = TaskSpec(name="tiny_qa", kind="extractive-qa", train=str(data / "squad.json"),
                  format="squad", dev_articles=1, epochs=1, learning_rate=1e-2, batch_size=16,
                  max_length=24, doc_stride=6, rank=4)
    return [sent, topic, pair, ner, qa]


def _rewrite_task_json(directory: Path, edit) -> None:
    meta = json.loads((directory / "task.json").read_text())
    edit(meta)
    (directory / "task.json").write_text(json.dumps(meta))
    write_checksums(directory)


@pytest.fixture(scope="session")
def adapters(tmp_path_factory, tiny_distilbert) -> dict[str, Path]:
    """Real adapters in a `pristine` folder: the five good tasks, a second sentiment version,
    and broken copies (corrupt, truncated, foreign base, with a pickle file)."""
    root = tmp_path_factory.mktemp("server-adapters")
    out: dict[str, Path] = {}
    for spec in _specs(root / "data"):
        train(spec, root / "pristine" / spec.name, quick(tiny_distilbert, epochs=1))
        out[spec.name] = root / "pristine" / spec.name
    v2 = _specs(root / "data2")[0]
    train(v2, root / "v2" / "tiny_sentiment", quick(tiny_distilbert, epochs=1, seed=7))
    out["tiny_sentiment_v2"] = root / "v2" / "tiny_sentiment"

    src = out["tiny_sentiment"]
    corrupt = root / "pristine" / "bad_corrupt"
    shutil.copytree(src, corrupt)
    raw = bytearray((corrupt / WEIGHTS).read_bytes())
    raw[len(raw) // 2] ^= 0xFF  # one flipped byte: the checksum no longer matches
    (corrupt / WEIGHTS).write_bytes(bytes(raw))
    truncated = root / "pristine" / "bad_truncated"
    shutil.copytree(src, truncated)
    (truncated / WEIGHTS).write_bytes((src / WEIGHTS).read_bytes()[:200])
    write_checksums(truncated)  # checksums agree: the safetensors reader must catch it
    foreign = root / "pristine" / "bad_foreign"
    shutil.copytree(src, foreign)
    _rewrite_task_json(foreign, lambda m: m["backbone"].update(fingerprint="0" * 64))
    pickled = root / "pristine" / "bad_pickle"
    shutil.copytree(src, pickled)
    (pickled / "pytorch_model.bin").write_bytes(b"not loaded: pickle files are refused unread")
    out.update(bad_corrupt=corrupt, bad_truncated=truncated, bad_foreign=foreign,
               bad_pickle=pickled)
    return out


@pytest.fixture()
def store(tmp_path, adapters) -> Path:
    """A fresh store per test (tests replace and unload): the good tasks and the bad copies."""
    root = tmp_path / "store"
    root.mkdir()
    for name in GOOD + BAD:
        shutil.copytree(adapters[name], root / name)
    return root


@pytest.fixture(scope="session")
def reference(adapters, tiny_distilbert) -> MultiTaskModel:
    """The engine run alone: the answers every server response must equal."""
    model = MultiTaskModel(tiny_distilbert)
    for name in GOOD:
        model.load(adapters[name], name=name)
    return model
