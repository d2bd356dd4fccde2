"""Unlabelled text for distillation: any text column of a file (csv, tsv, jsonl, parquet, or a
plain .txt of one text a line), or a file in the shared data folder (`{shared}/sst2/train.tsv`)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from ..errors import DataError
from ..tasks import TaskSpec
from ..tasks.reading import SHARED, read_table, shared_data_dir


def resolve_location(location: str | Path) -> Path:
    """A path, with a leading `{shared}` read as the shared data folder."""
    text = str(location)
    if text.startswith(SHARED):
        root = shared_data_dir()
        if root is None:
            raise DataError(f"{text} is in the shared data folder, and none is known here; set "
                            "ADAPTERS_KIT_SHARED_DATA or give the file's path")
        return root / text[len(SHARED):].lstrip("/")
    return Path(text).expanduser()


def read_texts(location: str | Path, spec: TaskSpec, text_column: str | None = None,
               limit: int | None = None) -> list[list[str]]:
    """The texts of `location` as one list per text field of `spec` (two for a pair task).

    Columns: `text_column` (comma-separated for a pair), else the task's own text fields where
    the file has them, else its only string column (or `text`/`sentence` among several). A
    file with no such column is refused, naming the columns it has."""
    path = resolve_location(location)
    if not path.is_file():
        raise DataError(f"unlabelled file {path} does not exist; give a file of texts (a column "
                        "of a csv/tsv/jsonl/parquet file, or a .txt with one text a line)")
    if path.suffix.lower() == ".txt":
        lines = [x.strip() for x in path.read_text(encoding=spec.encoding).splitlines()]
        columns = [[x for x in lines if x]]
        if spec.is_pair:
            raise DataError(f"{path} is plain text, one text a line, but task {spec.name!r} takes "
                            f"pairs ({list(spec.text_fields)}); give a table with those columns")
    else:
        table = read_table(dataclasses.replace(spec, format=None), str(path))
        names = _columns(table, spec, text_column, path)
        columns = [[str(v) if v is not None else "" for v in table[c]] for c in names]
    if not columns[0] or not any(t.strip() for t in columns[0]):
        raise DataError(f"unlabelled file {path} holds no text")
    if limit is not None:
        columns = [c[:limit] for c in columns]
    return columns


def _columns(table, spec: TaskSpec, text_column: str | None, path: Path) -> list[str]:
    have = list(table.column_names)
    want = len(spec.text_fields)
    if text_column:
        names = [c.strip() for c in text_column.split(",")]
        missing = [c for c in names if c not in have]
        if missing or len(names) != want:
            raise DataError(f"text column {text_column!r}: {path} has columns {have}; give "
                            f"{want} of them (task {spec.name!r} takes {list(spec.text_fields)})")
        return names
    if all(c in have for c in spec.text_fields):
        return list(spec.text_fields)
    texts = [c for c in have if _is_text(table, c)]
    if want == 1 and len(texts) > 1:
        texts = [c for c in texts if c.lower() in ("text", "sentence", "content", "body")][:1] or texts
    if len(texts) != want:
        raise DataError(f"unlabelled file {path} has no text column for task {spec.name!r} (it "
                        f"needs {list(spec.text_fields)}); its columns are {have}"
                        + (f", of which {texts} hold text" if texts else ", none of them text")
                        + "; name one with --text-column")
    return texts


def _is_text(table, column: str) -> bool:
    values = table[column][:50]
    strings = [v for v in values if isinstance(v, str)]
    if len(strings) < max(1, len(values) // 2):
        return False
    return any(" " in v or len(v) > 12 for v in strings)  # words, not labels or ids
