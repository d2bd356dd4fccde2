"""Reading task data with `datasets`, checking it against the task, tokenising, batching."""

from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path

import torch

from .errors import DataError
from .tasks import TaskSpec

_SUFFIX_FORMAT = {".csv": "csv", ".tsv": "tsv", ".txt": "tsv", ".jsonl": "jsonl",
                  ".json": "jsonl", ".parquet": "parquet"}


@dataclass
class Split:
    """One split of a task's data, checked: texts as columns, labels as model targets."""

    texts: list[list[str]]
    """One list per text field, each as long as the split."""
    targets: torch.Tensor
    """[n] label ids, [n, n_labels] multi-hot floats, or [n] floats for regression."""
    source: str

    def __len__(self) -> int:
        return len(self.texts[0])

    def joined(self) -> list[str]:
        """Texts with a pair joined by a separator, for the TF-IDF baseline."""
        return [" [SEP] ".join(parts) for parts in zip(*self.texts)]


def _format_of(spec: TaskSpec, path: str) -> str:
    if spec.format and spec.format != "hub":
        return spec.format
    if spec.format == "hub":
        return "hub"
    fmt = _SUFFIX_FORMAT.get(Path(path).suffix.lower())
    if fmt is None:
        raise DataError(f"cannot tell the format of {path}; set format = \"csv\", \"tsv\", "
                        "\"jsonl\" or \"parquet\" in the task card")
    return fmt


def check_encoding(path: Path, encoding: str) -> int:
    """Refuse a text file that does not decode, naming the line and the fix; count its lines."""
    lines = 0
    with open(path, "rb") as f:
        for lineno, raw in enumerate(f, start=1):
            lines += bool(raw.strip())
            try:
                raw.decode(encoding)
            except UnicodeDecodeError as e:
                raise DataError(
                    f"{path} line {lineno} is not valid {encoding} (byte {raw[e.start]:#04x} at "
                    f"column {e.start + 1}); re-save the file as UTF-8, or set encoding = "
                    "\"latin-1\" (or the file's real encoding) in the task card"
                ) from None
    return lines


def read_table(spec: TaskSpec, location: str, split: str = "train"):
    """Load one file (or hub dataset split) as a `datasets.Dataset`."""
    import datasets

    datasets.disable_progress_bars()
    fmt = _format_of(spec, location)
    if fmt == "hub":
        try:
            return datasets.load_dataset(location, split=split)
        except Exception as e:  # datasets raises many types for a missing or offline dataset
            raise DataError(f"cannot load hub dataset {location!r} split {split!r}: {e}") from e
    path = Path(location)
    if not path.is_file():
        raise DataError(f"data file {path} does not exist; fix the path in the task card "
                        f"({spec.source or 'register_task'}) or pass --data PATH")
    if fmt in ("csv", "tsv", "jsonl"):
        lines = check_encoding(path, "utf-8" if spec.encoding.lower() in ("utf-8", "utf8")
                               else spec.encoding)
        if lines <= (0 if fmt == "jsonl" else 1):
            raise DataError(f"{path} has no rows; a task needs labelled examples to train and "
                            "evaluate")
    try:
        if fmt in ("csv", "tsv"):
            enc = "utf-8-sig" if spec.encoding.lower() in ("utf-8", "utf8") else spec.encoding
            kwargs = {"sep": "\t" if fmt == "tsv" else ",", "encoding": enc,
                      "keep_default_na": False}
            if fmt == "tsv":
                kwargs["quoting"] = 3  # csv.QUOTE_NONE: quotes in text are text
            ds = datasets.load_dataset("csv", data_files=str(path), split="train", **kwargs)
        elif fmt == "jsonl":
            ds = datasets.load_dataset("json", data_files=str(path), split="train")
        else:
            ds = datasets.load_dataset("parquet", data_files=str(path), split="train")
    except DataError:
        raise
    except Exception as e:
        raise DataError(f"cannot read {path} as {fmt}: {e}") from e
    return ds


def _targets(spec: TaskSpec, raw: list, where: str) -> torch.Tensor:
    bad: dict[str, list[int]] = {}
    if spec.kind == "regression":
        out = []
        for i, v in enumerate(raw):
            try:
                out.append(float(v))
            except (TypeError, ValueError):
                bad.setdefault(str(v), []).append(i + 1)
                out.append(0.0)
        result = torch.tensor(out, dtype=torch.float32)
    elif spec.kind == "classification":
        index = {name: i for i, name in enumerate(spec.labels)}
        ids = []
        for i, v in enumerate(raw):
            key = str(v).strip()
            name = spec.label_map.get(key, key)
            if name not in index:
                bad.setdefault(key, []).append(i + 1)
            ids.append(index.get(name, -1))
        result = torch.tensor(ids, dtype=torch.long)
    else:
        index = {name: i for i, name in enumerate(spec.labels)}
        result = torch.zeros(len(raw), len(spec.labels))
        for i, v in enumerate(raw):
            items = v if isinstance(v, list) else [s for s in str(v).split(spec.label_separator)]
            for item in items:
                key = str(item).strip()
                if not key:
                    continue
                name = spec.label_map.get(key, key)
                if name not in index:
                    bad.setdefault(key, []).append(i + 1)
                else:
                    result[i, index[name]] = 1.0
    if bad:
        parts = [f"{label!r} (rows {', '.join(map(str, rows[:5]))}{', ...' if len(rows) > 5 else ''})"
                 for label, rows in list(bad.items())[:5]]
        expected = "numbers" if spec.kind == "regression" else f"one of {spec.labels}" + (
            f" or raw values {sorted(spec.label_map)}" if spec.label_map else "")
        raise DataError(f"{where}: label {'; '.join(parts)} is not in task {spec.name!r}: expected "
                        f"{expected}. Rows count from 1 after the header. Fix the data, or add "
                        "the label to the task's labels/label_map")
    return result


def to_split(spec: TaskSpec, ds, where: str) -> Split:
    """Check columns, texts and labels of a loaded table and turn it into a `Split`."""
    if len(ds) == 0:
        raise DataError(f"{where} has no rows; a task needs labelled examples to train and evaluate")
    needed = [*spec.text_fields, spec.label_field]
    missing = [c for c in needed if c not in ds.column_names]
    if missing:
        raise DataError(f"{where} has no column {', '.join(map(repr, missing))} (task {spec.name!r} "
                        f"needs {needed}); the file has columns {ds.column_names}. Rename the "
                        "columns or set text_fields/label_field in the task card")
    texts = []
    for col in spec.text_fields:
        values = ds[col]
        empty = [i + 1 for i, t in enumerate(values) if t is None or not str(t).strip()]
        if empty:
            raise DataError(f"{where}: column {col!r} is empty in rows {empty[:5]}; remove those "
                            "rows or fill them in")
        texts.append([str(t) for t in values])
    return Split(texts=texts, targets=_targets(spec, ds[spec.label_field], where), source=where)


def load_splits(spec: TaskSpec, seed: int = 0, max_train: int | None = None) -> tuple[Split, Split]:
    """The task's train and dev splits. Without a dev file, `dev_fraction` of train is held out."""
    if not spec.train:
        raise DataError(f"task {spec.name!r} names no training data; set data.train in its card "
                        "or pass --data PATH")
    train_ds = read_table(spec, spec.train, "train")
    where = spec.train
    if spec.dev:
        dev_ds = read_table(spec, spec.dev, "validation")
        dev = to_split(spec, dev_ds, spec.dev)
    else:
        if len(train_ds) < 2:
            raise DataError(f"{where} has {len(train_ds)} row(s): too few to hold out a dev split")
        parts = train_ds.train_test_split(test_size=spec.dev_fraction, seed=seed)
        train_ds, dev = parts["train"], to_split(spec, parts["test"], f"{where} (held-out dev)")
    if max_train is not None and len(train_ds) > max_train:
        train_ds = train_ds.shuffle(seed=seed).select(range(max_train))
    return to_split(spec, train_ds, where), dev


def load_eval_split(spec: TaskSpec, location: str | None = None, split: str = "dev",
                    seed: int = 0) -> Split:
    """One evaluation split: a given file, or the task's dev/test split."""
    if location:
        return to_split(spec, read_table(spec, location, "validation"), location)
    if split == "test":
        if not spec.test:
            raise DataError(f"task {spec.name!r} has no test data; pass --data PATH")
        return to_split(spec, read_table(spec, spec.test, "test"), spec.test)
    return load_splits(spec, seed=seed)[1]


def tokenize(tokenizer, split: Split, max_length: int) -> list[list[int]]:
    enc = tokenizer(*split.texts, truncation=True, max_length=max_length)
    return enc["input_ids"]


def length_grouped_batches(lengths: list[int], batch_size: int, seed: int,
                           group: int = 64) -> list[list[int]]:
    """Batches of similar length, in a seeded random order.

    Indices are shuffled, cut into windows of `group` batches, sorted by length inside each
    window, and cut into batches; the batch order is shuffled again. Padding shrinks to almost
    nothing while every epoch still sees a different order.
    """
    rng = random.Random(seed)
    order = list(range(len(lengths)))
    rng.shuffle(order)
    window = batch_size * group
    batches = []
    for start in range(0, len(order), window):
        chunk = sorted(order[start : start + window], key=lambda i: lengths[i])
        batches += [chunk[i : i + batch_size] for i in range(0, len(chunk), batch_size)]
    rng.shuffle(batches)
    return batches


def collate(ids: list[list[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Pad to the longest row: input ids [B, T] and attention mask [B, T]."""
    width = max(len(x) for x in ids)
    input_ids = torch.full((len(ids), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(ids), width), dtype=torch.long)
    for i, row in enumerate(ids):
        input_ids[i, : len(row)] = torch.tensor(row, dtype=torch.long)
        mask[i, : len(row)] = 1
    return input_ids, mask
