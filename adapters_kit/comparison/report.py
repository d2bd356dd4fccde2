"""A comparison in words: the terminal table, the recommendation, and the copy of the last run
that `adapters-kit backbones` shows."""

from __future__ import annotations

import json
import socket
from dataclasses import dataclass
from pathlib import Path

from ..backbones.embedded import cache_root
from ..files import atomic_write_text


@dataclass(frozen=True)
class Scale:
    """How a task's metric reads in points. A fraction (accuracy, F1 in [0, 1]) is shown in
    percent, so a point is 0.01; a metric already in points (SQuAD's 0-100) stays as it is; for
    mse, lower is better and a point is 1% of the best value."""

    metric: str
    factor: float
    higher_is_better: bool

    @classmethod
    def of(cls, metric: str, values: list[float]) -> Scale:
        if metric == "mse":
            return cls(metric, 1.0, False)
        return cls(metric, 1.0 if any(v > 1.0 for v in values) else 100.0, True)

    def shown(self, value: float) -> float:
        return value * self.factor

    @property
    def label(self) -> str:
        return f"dev {self.metric}" + (" (%)" if self.factor == 100.0 else "")

    def behind(self, value: float, best: float) -> float:
        """Points by which `value` trails `best` (0 for the best itself)."""
        if not self.higher_is_better:
            return (value - best) / abs(best) * 100 if best else value - best
        return (best - value) * self.factor

    def text(self, value: float) -> str:
        return f"{value * 100:.1f}%" if self.factor == 100.0 else f"{value:.4g}"


def _ran(results: list[dict]) -> list[dict]:
    return [r for r in results if "skipped" not in r]


def recommendation(results: list[dict], scale: Scale) -> str:
    """Plain words: the best, the fastest within 0.5 points of it, the smallest within 1 point."""
    ran = _ran(results)
    if not ran:
        return "nothing ran on this machine: see each combination's reason"
    sign = 1 if scale.higher_is_better else -1
    best = max(ran, key=lambda r: (sign * r["dev_metric"], -r["latency_p50_ms"]))
    near = [r for r in ran if scale.behind(r["dev_metric"], best["dev_metric"]) <= 0.5 + 1e-9]
    fastest = min(near, key=lambda r: (r["latency_p50_ms"], -sign * r["dev_metric"]))
    close = [r for r in ran if scale.behind(r["dev_metric"], best["dev_metric"]) <= 1.0 + 1e-9]
    smallest = min(close, key=lambda r: (r["base_resident_bytes"], -sign * r["dev_metric"],
                                         r["latency_p50_ms"]))

    def name(r: dict) -> str:
        return f"{r['backbone']} {r['precision']}"

    m = scale.metric
    return (f"best dev {m}: {name(best)} ({scale.text(best['dev_metric'])}); "
            f"fastest within 0.5 points of the best: {name(fastest)} (p50 "
            f"{fastest['latency_p50_ms']:.1f} ms, {m} {scale.text(fastest['dev_metric'])}); "
            f"smallest memory within 1 point: {name(smallest)} "
            f"({smallest['base_resident_bytes'] / 1e6:.1f} MB resident, {m} "
            f"{scale.text(smallest['dev_metric'])})")


COLUMNS = (("backbone", "{}"), ("precision", "{}"), ("dev", None), ("train s", "{:.0f}"),
           ("p50 ms", "{:.1f}"), ("p99 ms", "{:.1f}"), ("rows/s", "{:.0f}"),
           ("base MB (RAM)", "{:.1f}"), ("adapter KB", "{:.0f}"), ("base MB (disk)", "{:.1f}"),
           ("", "{}"))


def table(results: list[dict], scale: Scale) -> str:
    """The terminal table: a row per combination; one that could not run says why."""
    header = [c for c, _ in COLUMNS]
    header[2] = scale.label
    rows = []
    for r in results:
        if "skipped" in r:
            rows.append([r["backbone"], r["precision"], f"skipped: {r['skipped']}"])
            continue
        values = [r["backbone"], r["precision"], scale.text(r["dev_metric"]), r["train_seconds"],
                  r["latency_p50_ms"], r["latency_p99_ms"], r["rows_per_second"],
                  r["base_resident_bytes"] / 1e6, r["adapter_bytes"] / 1e3, r["base_disk_bytes"] / 1e6,
                  "reused" if r.get("reused") else ""]
        rows.append([v if fmt is None else fmt.format(v) for v, (_, fmt) in zip(values, COLUMNS)])
    full = [r for r in rows if len(r) == len(header)]
    widths = [max([len(header[i])] + [len(r[i]) for r in full]) for i in range(len(header))]
    first = [max([widths[i]] + [len(r[i]) for r in rows]) for i in range(2)]
    widths[:2] = first

    def line(cells: list[str]) -> str:
        if len(cells) < len(header):  # a skipped row: its reason runs on past the columns
            return "  ".join(c.ljust(widths[i]) for i, c in enumerate(cells[:2])) + "  " + cells[2]
        return "  ".join(c.ljust(w) if i < 2 else c.rjust(w)
                         for i, (c, w) in enumerate(zip(cells, widths))).rstrip()

    return "\n".join([line(header), *(line(r) for r in rows)])


def last_run_path() -> Path:
    """Where the last comparison run by this user on this machine is kept: beside the
    converted backbones, under the cache directory (`ADAPTERS_KIT_CACHE` overrides it)."""
    return cache_root() / "compare" / "last.json"


def keep_last(record: dict) -> Path:
    path = last_run_path()
    atomic_write_text(path, json.dumps({**record, "host": socket.gethostname()}, indent=1))
    return path


def last_comparison() -> dict | None:
    """The last comparison's record (what compare.json holds), or None if there was none."""
    path = last_run_path()
    try:
        record = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return record if isinstance(record, dict) and isinstance(record.get("results"), list) else None


def summary(record: dict) -> str:
    """The last comparison as `adapters-kit backbones` shows it."""
    results = record["results"]
    scale = Scale.of(record.get("metric", "accuracy"),
                     [r["dev_metric"] for r in _ran(results)])
    head = (f"Last `adapters-kit compare` on this machine: task {record.get('task')}, "
            f"{record.get('created', '?')}, {record.get('json', '')}")
    return "\n".join([head, table(results, scale), record.get("recommendation", "")])
