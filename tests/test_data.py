"""Reading and checking data: every bad input gets an error naming the value and the fix."""

from __future__ import annotations

import json

import pytest
from helpers import write_tsv

from adapters_kit import DataError, TaskSpec
from adapters_kit.tasks.reading import length_grouped_batches, load_splits


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
    assert train.targets.tolist() == [int(t.split()[1]) % 2 for t in train.texts[0]]  # "premise i"
    assert set(train.targets.tolist()) == {0, 1}
    (tmp_path / "d.csv").write_text('a,b,y\n"x, with comma",y,1\nq,r,0\nq2,r2,0\nq3,r3,1\n')
    train, dev = load_splits(s.with_data(str(tmp_path / "d.csv")))
    assert "x, with comma" in train.texts[0] + dev.texts[0]
    want = {"x, with comma": 1, "q": 0, "q2": 0, "q3": 1}
    assert [want[t] for t in train.texts[0] + dev.texts[0]] == train.targets.tolist() + dev.targets.tolist()


def test_multi_label_and_regression_targets(tmp_path):
    write_tsv(tmp_path / "m.tsv", ["text", "tags"], [("a", "x,y"), ("b", "y"), ("c", ""),
                                                     ("d", "x")] * 3)
    m = TaskSpec(name="m", kind="multi-label", labels=["x", "y"], label_field="tags",
                 train=str(tmp_path / "m.tsv"), dev_fraction=0.25)
    train, _ = load_splits(m)
    assert train.targets.shape[1] == 2 and set(train.targets.sum(1).tolist()) <= {0.0, 1.0, 2.0}
    want = {"a": [1.0, 1.0], "b": [0.0, 1.0], "c": [0.0, 0.0], "d": [1.0, 0.0]}  # labels x, y
    assert train.targets.tolist() == [want[t] for t in train.texts[0]]
    assert set(train.texts[0]) == set(want)
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


# Row numbers in data errors are the file's data rows, counted from 1 after the header (row N is
# line N + 1 of a CSV/TSV whose texts have no line breaks), whatever split or subset is checked.

def _rows_with(bad: dict[int, tuple[str, str]], n: int = 60) -> list[tuple[str, str]]:
    """n good rows, with file row i (1-based, after the header) replaced by bad[i]."""
    rows = [("good film", "pos") if i % 2 else ("bad film", "neg") for i in range(1, n + 1)]
    for i, row in bad.items():
        rows[i - 1] = row
    return rows


def test_unknown_label_names_file_rows_with_held_out_dev(tmp_path):
    write_tsv(tmp_path / "train.tsv", ["text", "label"],
              _rows_with({42: ("meh", "neutral"), 7: ("hmm", "neutral"), 55: ("eh", "neutral")}))
    with pytest.raises(DataError) as e:
        load_splits(spec(tmp_path))  # dev is held out of this file, as with --data
    assert "'neutral' (rows 7, 42, 55)" in str(e.value)


def test_unknown_label_with_max_train_names_file_rows(tmp_path):
    write_tsv(tmp_path / "train.tsv", ["text", "label"], _rows_with({42: ("meh", "neutral")}))
    with pytest.raises(DataError) as e:
        load_splits(spec(tmp_path, dev=str(tmp_path / "train.tsv")), max_train=50)
    assert "'neutral' (row 42)" in str(e.value)


def test_many_bad_rows_are_counted(tmp_path):
    bad = {i: ("meh", "neutral") for i in range(3, 63, 2)}  # 30 rows
    write_tsv(tmp_path / "train.tsv", ["text", "label"], _rows_with(bad, n=70))
    with pytest.raises(DataError) as e:
        load_splits(spec(tmp_path))
    msg = str(e.value)
    assert "rows 3, 5, 7," in msg and "30 rows in all" in msg


def test_bad_rows_of_train_and_dev_files_are_both_reported(tmp_path):
    write_tsv(tmp_path / "train.tsv", ["text", "label"], _rows_with({5: ("x", "neutral")}))
    write_tsv(tmp_path / "dev.tsv", ["text", "label"], _rows_with({9: ("x", "maybe")}, n=20))
    with pytest.raises(DataError) as e:
        load_splits(spec(tmp_path, dev=str(tmp_path / "dev.tsv")))
    msg = str(e.value)
    assert "train.tsv" in msg and "'neutral' (row 5)" in msg
    assert "dev.tsv" in msg and "'maybe' (row 9)" in msg


def test_empty_text_names_file_rows_with_held_out_dev(tmp_path):
    write_tsv(tmp_path / "train.tsv", ["text", "label"], _rows_with({42: (" ", "pos"), 8: (" ", "neg")}))
    with pytest.raises(DataError) as e:
        load_splits(spec(tmp_path))
    assert "column 'text' is empty in rows 8, 42" in str(e.value)


def test_regression_and_multi_label_errors_name_file_rows(tmp_path):
    rows = [(f"t{i}", "0.5") for i in range(1, 41)]
    rows[33 - 1] = ("t33", "oops")
    write_tsv(tmp_path / "r.tsv", ["text", "score"], rows)
    r = TaskSpec(name="r", kind="regression", label_field="score", train=str(tmp_path / "r.tsv"))
    with pytest.raises(DataError) as e:
        load_splits(r)
    assert "'oops' (row 33)" in str(e.value)
    rows = [(f"t{i}", "x,y") for i in range(1, 41)]
    rows[27 - 1] = ("t27", "x,zz")
    write_tsv(tmp_path / "m.tsv", ["text", "tags"], rows)
    m = TaskSpec(name="m", kind="multi-label", labels=["x", "y"], label_field="tags",
                 train=str(tmp_path / "m.tsv"))
    with pytest.raises(DataError) as e:
        load_splits(m)
    assert "'zz' (row 27)" in str(e.value)


def test_held_out_dev_is_the_same_rows_as_datasets_split(tmp_path):
    """Existing adapters' dev splits stay what they were trained against."""
    import datasets

    rows = [(f"text number {i}", "pos" if i % 3 else "neg") for i in range(1, 101)]
    write_tsv(tmp_path / "train.tsv", ["text", "label"], rows)
    s = spec(tmp_path)
    ds = datasets.Dataset.from_dict({"text": [t for t, _ in rows]})
    for seed in (0, 5):
        parts = ds.train_test_split(test_size=s.dev_fraction, seed=seed)
        train, dev = load_splits(s, seed=seed, max_train=50)
        assert dev.texts[0] == parts["test"]["text"]
        assert train.texts[0] == parts["train"].shuffle(seed=seed).select(range(50))["text"]


def test_cp1252_file_gets_the_cp1252_hint_and_the_flag_works(tmp_path):
    text = "text\tlabel\n" + "\u201cgreat\u201d film\tpos\nbad\tneg\n" * 4
    (tmp_path / "train.tsv").write_bytes(text.encode("cp1252"))
    with pytest.raises(DataError) as e:
        load_splits(spec(tmp_path))
    msg = str(e.value)
    assert "line 2" in msg and "--encoding cp1252" in msg and "latin-1" not in msg
    train, dev = load_splits(spec(tmp_path, encoding="cp1252"))
    assert "\u201cgreat\u201d film" in train.texts[0] + dev.texts[0]


def test_non_cp1252_bytes_get_the_latin1_hint(tmp_path):
    (tmp_path / "train.tsv").write_bytes(b"text\tlabel\ngood\tpos\nx\x81y\tneg\n")
    with pytest.raises(DataError) as e:
        load_splits(spec(tmp_path))
    assert "line 3" in str(e.value) and "--encoding latin-1" in str(e.value)


def test_jsonl_reads_in_the_given_encoding(tmp_path):
    rows = [json.dumps({"text": f"caf\u00e9 {i}", "label": "pos" if i % 2 else "neg"},
                       ensure_ascii=False) for i in range(8)]
    (tmp_path / "d.jsonl").write_bytes("\n".join(rows).encode("cp1252"))
    train, dev = load_splits(spec(tmp_path, train=str(tmp_path / "d.jsonl"), encoding="cp1252"))
    assert "caf\u00e9 1" in train.texts[0] + dev.texts[0]


def test_unknown_encoding_is_named(tmp_path):
    write_tsv(tmp_path / "train.tsv", ["text", "label"], _rows_with({}))
    with pytest.raises(DataError, match="'utf-9'.*cp1252"):
        load_splits(spec(tmp_path, encoding="utf-9"))


def test_a_directory_is_named_as_one_with_its_files(tmp_path):
    (tmp_path / "d").mkdir()
    write_tsv(tmp_path / "d" / "train.tsv", ["text", "label"], _rows_with({}))
    write_tsv(tmp_path / "d" / "dev.tsv", ["text", "label"], _rows_with({}))
    for fmt in (None, "tsv"):
        with pytest.raises(DataError) as e:
            load_splits(spec(tmp_path, train=str(tmp_path / "d"), format=fmt))
        msg = str(e.value)
        assert "is a directory" in msg and "dev.tsv, train.tsv" in msg


def test_a_headerless_file_gets_the_header_hint(tmp_path):
    (tmp_path / "train.tsv").write_text("good film\tpos\nbad film\tneg\n" * 4)
    with pytest.raises(DataError, match="header row"):
        load_splits(spec(tmp_path))
