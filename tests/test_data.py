"""Reading and checking data: every bad input gets an error naming the value and the fix."""

from __future__ import annotations

import json

import pytest
from conftest import write_tsv

from adapters_kit import DataError, TaskSpec
from adapters_kit.data import length_grouped_batches, load_splits


def spec(tmp_path, **kw) -> TaskSpec:
    base = dict(name="t", labels=["neg", "pos"], train=str(tmp_path / "train.tsv"),
                dev_fraction=0.25)
    base.update(kw)
    return TaskSpec(**base)


def test_missing_file_is_named(tmp_path):
    with pytest.raises(DataError) as e:
        load_splits(spec(tmp_path))
    assert str(tmp_path / "train.tsv") in str(e.value) and "--data" in str(e.value)


def test_missing_column_names_file_and_column(tmp_path):
    write_tsv(tmp_path / "train.tsv", ["sentence", "label"], [("good", "pos")] * 8)
    with pytest.raises(DataError) as e:
        load_splits(spec(tmp_path))
    msg = str(e.value)
    assert "'text'" in msg and "train.tsv" in msg and "sentence" in msg


def test_unknown_label_names_label_and_rows(tmp_path):
    rows = [("good", "pos"), ("bad", "neg")] * 4 + [("meh", "neutral"), ("ok", "pos"),
                                                   ("hmm", "neutral")]
    write_tsv(tmp_path / "train.tsv", ["text", "label"], rows)
    write_tsv(tmp_path / "dev.tsv", ["text", "label"], rows)
    with pytest.raises(DataError) as e:
        load_splits(spec(tmp_path, dev=str(tmp_path / "dev.tsv")))
    msg = str(e.value)
    assert "'neutral'" in msg and "rows 9, 11" in msg and "['neg', 'pos']" in msg


def test_empty_dataset(tmp_path):
    write_tsv(tmp_path / "train.tsv", ["text", "label"], [])
    write_tsv(tmp_path / "dev.tsv", ["text", "label"], [("x", "pos")])
    with pytest.raises(DataError, match="no rows"):
        load_splits(spec(tmp_path, dev=str(tmp_path / "dev.tsv")))


def test_non_utf8_names_line_and_fix(tmp_path):
    (tmp_path / "train.tsv").write_bytes("text\tlabel\ngood\tpos\ncaf\xe9 ok\tpos\n".encode("latin-1"))
    with pytest.raises(DataError) as e:
        load_splits(spec(tmp_path))
    assert "line 3" in str(e.value) and "encoding" in str(e.value)
    # and the fix works: the card names the file's encoding
    ok = spec(tmp_path, encoding="latin-1")
    (tmp_path / "train.tsv").write_bytes(("text\tlabel\n" + "caf\xe9 good\tpos\nbad\tneg\n" * 4)
                                         .encode("latin-1"))
    train, dev = load_splits(ok)
    assert any("café" in t for t in train.texts[0] + dev.texts[0])


def test_label_map_formats_and_pairs(tmp_path):
    rows = [{"a": f"premise {i}", "b": f"hypothesis {i}", "y": i % 2} for i in range(10)]
    (tmp_path / "d.jsonl").write_text("\n".join(json.dumps(r) for r in rows))
    s = TaskSpec(name="p", labels=["no", "yes"], label_map={"0": "no", "1": "yes"},
                 text_fields=["a", "b"], label_field="y", train=str(tmp_path / "d.jsonl"))
    train, dev = load_splits(s)
    assert len(train) + len(dev) == 10 and len(train.texts) == 2
    import datasets

    datasets.Dataset.from_list(rows).to_parquet(str(tmp_path / "d.parquet"))
    train, _ = load_splits(s.with_data(str(tmp_path / "d.parquet")))
    assert set(train.targets.tolist()) <= {0, 1}
    (tmp_path / "d.csv").write_text('a,b,y\n"x, with comma",y,1\nq,r,0\nq2,r2,0\nq3,r3,1\n')
    train, dev = load_splits(s.with_data(str(tmp_path / "d.csv")))
    assert "x, with comma" in train.texts[0] + dev.texts[0]


def test_multi_label_and_regression_targets(tmp_path):
    write_tsv(tmp_path / "m.tsv", ["text", "tags"], [("a", "x,y"), ("b", "y"), ("c", ""),
                                                     ("d", "x")] * 3)
    m = TaskSpec(name="m", kind="multi-label", labels=["x", "y"], label_field="tags",
                 train=str(tmp_path / "m.tsv"), dev_fraction=0.25)
    train, _ = load_splits(m)
    assert train.targets.shape[1] == 2 and set(train.targets.sum(1).tolist()) <= {0.0, 1.0, 2.0}
    write_tsv(tmp_path / "r.tsv", ["text", "score"], [("a", "0.5"), ("b", "oops")] * 3)
    r = TaskSpec(name="r", kind="regression", label_field="score", train=str(tmp_path / "r.tsv"),
                 dev_fraction=0.3)
    with pytest.raises(DataError, match="'oops'"):
        load_splits(r)


def test_length_grouped_batches_cover_every_row_once_and_are_seeded():
    lengths = [(i * 7919) % 61 + 1 for i in range(1000)]
    a = length_grouped_batches(lengths, 16, seed=3)
    assert sorted(i for b in a for i in b) == list(range(1000))
    assert a == length_grouped_batches(lengths, 16, seed=3)
    assert a != length_grouped_batches(lengths, 16, seed=4)
    # grouping keeps padding small: the mean in-batch spread is far below the global spread
    spread = sum(max(lengths[i] for i in b) - min(lengths[i] for i in b) for b in a) / len(a)
    assert spread < 10
