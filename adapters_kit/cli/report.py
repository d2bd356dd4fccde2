"""How the commands write: one JSON object on stdout under `--json`, else text; warnings and
errors on stderr."""

from __future__ import annotations

import json
import sys


def print_json(obj: dict) -> None:
    print(json.dumps(obj, indent=None, default=str))


def progress_line(event: dict) -> None:
    """`--json` training progress: one JSON object a line on stderr (stdout keeps the result)."""
    print(json.dumps(event, default=str), file=sys.stderr, flush=True)


def warn(notes: list[str]) -> None:
    for note in notes:
        print(f"adapters-kit: warning: {note}", file=sys.stderr)


def fail(as_json: bool, code: int, kind: str, message: str) -> int:
    """Report a failure: `{"error": {...}}` on stdout under `--json`, else text on stderr."""
    if as_json:
        print_json({"error": {"type": kind, "message": message, "exit_code": code}})
    else:
        print(f"adapters-kit: error: {message}", file=sys.stderr)
    return code


def print_report(report: dict) -> None:
    """The per-class table and, for single-label tasks, the confusion matrix."""
    if not report:
        return
    labels = report["labels"]
    width = max(9, *(len(n) for n in labels))
    print(f"{'class':<{width}}  precision  recall     f1  support  predicted")
    for name, r in report["per_class"].items():
        print(f"{name:<{width}}  {r['precision']:9.4f}  {r['recall']:6.4f}  {r['f1']:.4f}  "
              f"{r['support']:7d}  {r['predicted']:9d}")
    matrix = report.get("confusion_matrix")
    if matrix:
        cell = max(6, *(len(n) for n in labels), *(len(str(v)) for row in matrix for v in row))
        print(f"confusion (rows: true, columns: predicted)\n{'':<{width}}  "
              + " ".join(f"{n:>{cell}}" for n in labels))
        for name, row in zip(labels, matrix):
            print(f"{name:<{width}}  " + " ".join(f"{v:>{cell}}" for v in row))
