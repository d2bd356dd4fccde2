"""Reading task data with `datasets`, checking it against the task, tokenising, batching."""

from __future__ import annotations

import codecs
import os
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from .._quiet import quiet_datasets
from ..errors import DataError

if TYPE_CHECKING:
    from .spec import TaskSpec

SHARED = "{shared}"
"""Prefix of a card's data path in the shared data folder (see `shared_data_dir`)."""


def shared_data_dir() -> Path | None:
    """`ADAPTERS_KIT_SHARED_DATA`, else `../shared/data` beside the project checkout; None in an
    installed package without that variable (it has no checkout to sit beside)."""
    env = os.environ.get("ADAPTERS_KIT_SHARED_DATA")
    if env:
        return Path(env)
    checkout = Path(__file__).resolve().parents[2]  # adapters_kit/tasks/reading.py
    return checkout.parent / "shared" / "data" if (checkout / "pyproject.toml").is_file() else None



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
    rows: list[int] = field(default_factory=list)
    """The file's data row of each example (1-based, after the header), for messages."""

    def __len__(self) -> int:
        return len(self.texts[0])

    def subset(self, idx: list[int], source: str | None = None) -> Split:
        """The examples at positions `idx`, keeping their file rows."""
        return Split(texts=[[col[i] for i in idx] for col in self.texts], targets=self.targets[idx],
                     source=source or self.source, rows=[self.rows[i] for i in idx])

    def joined(self) -> list[str]:
        """Texts with a pair joined by a separator, for the TF-IDF baseline."""
        return [" [SEP] ".join(parts) for parts in zip(*self.texts)]


ROW_NOTE = ("Rows are the file's data rows, counted from 1 after the header (row N is line N + 1 "
            "of a CSV or TSV file whose texts have no line breaks, line N of a JSONL file)")


def row_list(rows: list[int], limit: int = 20, unit: str = "row") -> str:
    """'row 7', 'rows 7, 42', or the first `limit` rows and how many there are in all."""
    if len(rows) == 1:
        return f"{unit} {rows[0]}"
    shown = ", ".join(map(str, rows[:limit]))
    return f"{unit}s {shown}" + (f", ... ({len(rows)} {unit}s in all)" if len(rows) > limit else "")


def refuse_directory(path: Path) -> None:
    """A directory where a data file belongs: say so, and name what it holds. A card's
    `{shared}` path that stayed unresolved (no shared data folder is known): say what to set."""
    if str(path).startswith(SHARED):
        raise DataError(f"{path} is in the shared data folder, and none is known here (an installed "
                        "package has no checkout beside it); set ADAPTERS_KIT_SHARED_DATA to the "
                        "folder holding it, or pass --data PATH")
    if not path.is_dir():
        return
    names = sorted(p.name + ("/" if p.is_dir() else "") for p in path.iterdir())
    held = ", ".join(names[:20]) + (f", ... ({len(names)} entries)" if len(names) > 20 else "")
    raise DataError(f"{path} is a directory, not a data file; pass one file in it, e.g. --data "
                    f"{path / (names[0] if names else 'train.tsv')} (it holds: {held or 'nothing'})")


def data_file(spec: TaskSpec, location: str) -> Path:
    """`location` as an existing data file, or an error naming what is there instead."""
    path = Path(location)
    refuse_directory(path)
    if not path.is_file():
        raise DataError(f"data file {path} does not exist; fix the path in the task card "
                        f"({spec.source or 'register_task'}) or pass --data PATH")
    return path


def codec(encoding: str) -> str:
    """The Python codec name for `encoding`, or an error naming it and the usual choices."""
    try:
        return codecs.lookup(encoding).name
    except LookupError:
        raise DataError(f"unknown encoding {encoding!r}; give a Python codec name such as "
                        "utf-8, cp1252 (Windows) or latin-1") from None


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


def _decodes(path: Path, encoding: str) -> bool:
    with open(path, "rb") as f:
        try:
            for raw in f:
                raw.decode(encoding)
        except UnicodeDecodeError:
            return False
    return True


def check_encoding(path: Path, encoding: str) -> int:
    """Refuse a text file that does not decode, naming the line and the fix; count its lines."""
    encoding = codec(encoding)
    lines = 0
    with open(path, "rb") as f:
        for lineno, raw in enumerate(f, start=1):
            lines += bool(raw.strip())
            try:
                raw.decode(encoding)
            except UnicodeDecodeError as e:
                # cp1252 (Windows "ANSI") is what most non-UTF-8 text files are; latin-1 decodes
                # any bytes, but turns cp1252's quotes and dashes into control characters.
                guess = "cp1252" if encoding != "cp1252" and _decodes(path, "cp1252") else "latin-1"
                raise DataError(
                    f"{path} line {lineno} is not valid {encoding} (byte {raw[e.start]:#04x} at "
                    f"column {e.start + 1}); re-save the file as UTF-8, or pass --encoding {guess} "
                    f"(encoding = \"{guess}\" in the task card)"
                    + (", which decodes the whole file" if guess == "cp1252" else
                       ", or the file's real encoding")
                ) from None
    return lines


@quiet_datasets()
def read_table(spec: TaskSpec, location: str, split: str = "train"):
    """Load one file (or hub dataset split) as a `datasets.Dataset`."""
    import datasets

    if spec.format != "hub":
        refuse_directory(Path(location))
    fmt = _format_of(spec, location)
    if fmt == "hub":
        try:
            return datasets.load_dataset(location, split=split)
        except Exception as e:  # datasets raises many types for a missing or offline dataset
            raise DataError(f"cannot load hub dataset {location!r} split {split!r}: {e}") from e
    path = data_file(spec, location)
    utf8 = codec(spec.encoding) == "utf-8"
    if fmt in ("csv", "tsv", "jsonl"):
        lines = check_encoding(path, spec.encoding)
        if lines <= (0 if fmt == "jsonl" else 1):
            raise DataError(f"{path} has no rows; a task needs labelled examples to train and "
                            "evaluate")
    try:
        if fmt in ("csv", "tsv"):
            enc = "utf-8-sig" if utf8 else spec.encoding
            kwargs = {"sep": "\t" if fmt == "tsv" else ",", "encoding": enc,
                      "keep_default_na": False}
            if fmt == "tsv":
                kwargs["quoting"] = 3  # csv.QUOTE_NONE: quotes in text are text
            ds = datasets.load_dataset("csv", data_files=str(path), split="train", **kwargs)
        elif fmt == "jsonl":
            ds = datasets.load_dataset("json", data_files=str(path), split="train",
                                      encoding="utf-8" if utf8 else spec.encoding)
        else:
            ds = datasets.load_dataset("parquet", data_files=str(path), split="train")
    except DataError:
        raise
    except Exception as e:
        raise DataError(f"cannot read {path} as {fmt}: {e}") from e
    return ds


def _targets(spec: TaskSpec, raw: list, rows: list[int]) -> tuple[torch.Tensor, str | None]:
    """Model targets for the label column (the kind parses them), and the problem with it (None
    when every row fits)."""
    kind = spec.kind_impl
    result, bad = kind.parse_targets(spec, raw, rows)
    if not bad:
        return result, None
    parts = [f"{label!r} ({row_list(found)})" for label, found in list(bad.items())[:10]]
    if len(bad) > 10:
        parts.append(f"and {len(bad) - 10} more values")
    return result, (f"label {'; '.join(parts)} is not in task {spec.name!r}: expected "
                    f"{kind.expected_labels(spec)}. Fix the data, or add the label to the task's "
                    "labels/label_map")


def to_split(spec: TaskSpec, ds, where: str) -> Split:
    """Check columns, texts and labels of a loaded table (a whole file) and turn it into a `Split`.

    Every problem is reported at once, each with the file rows it is on."""
    if len(ds) == 0:
        raise DataError(f"{where} has no rows; a task needs labelled examples to train and evaluate")
    needed = [*spec.text_fields, spec.label_field]
    missing = [c for c in needed if c not in ds.column_names]
    if missing:
        header = (" CSV and TSV files need a header row naming the columns; the first line is "
                  "read as one." if Path(where).suffix.lower() in (".csv", ".tsv", ".txt") or
                  spec.format in ("csv", "tsv") else "")
        raise DataError(f"{where} has no column {', '.join(map(repr, missing))} (task {spec.name!r} "
                        f"needs {needed}); the file has columns {ds.column_names}. Rename the "
                        f"columns or set text_fields/label_field in the task card.{header}")
    rows = list(range(1, len(ds) + 1))
    texts, problems = [], []
    for col in spec.text_fields:
        values = ds[col]
        empty = [r for r, t in zip(rows, values) if t is None or not str(t).strip()]
        if empty:
            problems.append(f"column {col!r} is empty in {row_list(empty)}; remove those rows or "
                            "fill them in")
        texts.append([str(t) for t in values])
    targets, bad_labels = _targets(spec, ds[spec.label_field], rows)
    if bad_labels:
        problems.append(bad_labels)
    if problems:
        raise DataError(f"{where}: " + f"\n{where}: ".join(problems) + f". {ROW_NOTE}.")
    return Split(texts=texts, targets=targets, source=where, rows=rows)


def _read_split(spec: TaskSpec, location: str, split: str) -> Split:
    return to_split(spec, read_table(spec, location, split), location)


def _index_split(n: int, test_size: float, seed: int) -> tuple[list[int], list[int]]:
    """(train, held-out) positions exactly as `datasets.Dataset.train_test_split` draws them."""
    import datasets

    parts = datasets.Dataset.from_dict({"i": list(range(n))}).train_test_split(
        test_size=test_size, seed=seed)
    return parts["train"]["i"], parts["test"]["i"]


def _index_shuffle(n: int, seed: int) -> list[int]:
    """0..n-1 in the order `datasets.Dataset.shuffle(seed=seed)` gives."""
    import datasets

    return datasets.Dataset.from_dict({"i": list(range(n))}).shuffle(seed=seed)["i"]


def load_splits(spec: TaskSpec, seed: int = 0, max_train: int | None = None) -> tuple[Split, Split]:
    """The task's train and dev splits. Without a dev file, `dev_fraction` of train is held out.

    Each file is checked whole before it is split or subset, so errors name every bad row by
    its row in the file."""
    if not spec.train:
        raise DataError(f"task {spec.name!r} names no training data; set data.train in its card "
                        "or pass --data PATH")
    where = spec.train
    if spec.dev:
        loaded, errors = [], []
        for location, split in ((spec.train, "train"), (spec.dev, "validation")):
            try:
                loaded.append(_read_split(spec, location, split))
            except DataError as e:
                errors.append(str(e))
        if errors:
            raise DataError("\n".join(errors))
        train, dev = loaded
    else:
        full = _read_split(spec, spec.train, "train")
        if len(full) < 2:
            raise DataError(f"{where} has {len(full)} row(s): too few to hold out a dev split")
        train_idx, dev_idx = _index_split(len(full), spec.dev_fraction, seed)
        train, dev = full.subset(train_idx), full.subset(dev_idx, f"{where} (held-out dev)")
    if max_train is not None and len(train) > max_train:
        train = train.subset(_index_shuffle(len(train), seed)[:max_train])
    return train, dev


def load_eval_split(spec: TaskSpec, location: str | None = None, split: str = "dev",
                    seed: int = 0) -> Split:
    """One evaluation split: a given file, or the task's dev/test split."""
    if location:
        return _read_split(spec, location, "validation")
    if split == "test":
        if not spec.test:
            raise DataError(f"task {spec.name!r} has no test data; pass --data PATH")
        return _read_split(spec, spec.test, "test")
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


def collate(ids: list[list[int]], pad_id: int, device: torch.device | str | None = None
            ) -> tuple[torch.Tensor, torch.Tensor]:
    """Pad to the longest row: input ids [B, T] and attention mask [B, T], made on `device`
    (one copy from Python lists, not one per row)."""
    width = max(len(x) for x in ids)
    input_ids = torch.tensor([x + [pad_id] * (width - len(x)) for x in ids],  # [B, T]
                             dtype=torch.long, device=device)
    mask = torch.tensor([[1] * len(x) + [0] * (width - len(x)) for x in ids],  # [B, T]
                        dtype=torch.long, device=device)
    return input_ids, mask
