"""`compare`: train a task on every backbone x precision under one budget, then measure each
adapter through the serving engine on this machine."""

from __future__ import annotations

import contextlib
import gc
import json
import os
import platform
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch

from ..adapters.local import LocalStore
from ..adapters.store import CHECKSUMS, TASK, read_adapter
from ..backbones import Backbone
from ..engine.memory import HeapTrimmer
from ..engine.model import MultiTaskModel
from ..errors import AdaptersKitError, ConfigError
from ..files import atomic_write_text, default_file_mode, sha256_file
from ..tasks import TaskSpec, get_task
from ..tasks.kinds import kind_of
from ..training.loop import TrainConfig, train
from . import grid, measure
from .plot import compare_png
from .report import Scale, keep_last, recommendation, table

FIGURES = ("dev_metric", "train_seconds", "latency_p50_ms", "latency_p99_ms", "rows_per_second",
           "base_resident_bytes", "adapter_bytes", "base_disk_bytes")
"""What every combination that ran reports (the output contract)."""


@dataclass
class Comparison:
    """A finished comparison: one result per combination, the words, and where the files are."""

    task: str
    metric: str
    results: list[dict]
    recommendation: str
    png: Path
    json_path: Path
    store: Path
    settings: dict
    machine: dict
    baseline: dict = field(default_factory=dict)
    seconds: float = 0.0
    created: str = ""

    def table(self) -> str:
        return table(self.results, self.scale)

    @property
    def scale(self) -> Scale:
        return Scale.of(self.metric, [r["dev_metric"] for r in self.results if "skipped" not in r])

    def to_dict(self) -> dict:
        return {"task": self.task, "metric": self.metric, "created": self.created,
                "settings": self.settings, "machine": self.machine, "tfidf_baseline": self.baseline,
                "results": self.results, "recommendation": self.recommendation,
                "png": str(self.png), "json": str(self.json_path), "store": str(self.store),
                "seconds": round(self.seconds, 1)}


def compare(task: str | TaskSpec, backbones: str | list[str] | None = None,
            precisions: str | list[str] | None = None, *, device: str | None = None,
            budget_s: float | None = None, epochs: float | None = None,
            max_train_examples: int | None = None, seed: int = 0, threads: int | None = None,
            out: str | Path | None = None, progress: bool = True,
            on_progress: Callable[[dict], None] | None = None) -> Comparison:
    """Train `task` on every backbone x precision and measure each result on this machine.

    Every combination trains under the same time budget (`budget_s` seconds, default
    `DEFAULT_BUDGET_S`), or for the same `epochs` when given without a budget. A combination
    that cannot run here is kept in the results with its reason (`skipped`). The adapters go
    into the store `out/adapters` under names that say the combination; a later call with the
    same settings reuses them, and any change of settings, task, data or base retrains.

    Writes `out/compare.json` and `out/compare.png` (default `out`: `compare-TASK`) and keeps
    a copy of the record for `adapters-kit backbones` (see `report.last_run_path`).
    `threads` sets torch's threads for training and measuring (default: torch's own, all
    cores). `on_progress` receives plain dicts: `{"event": "cell", ...}` before each combination,
    training's own events with `backbone` and `precision` added, and `"result"` after each.
    """
    started = time.perf_counter()
    spec = task if isinstance(task, TaskSpec) else get_task(task)
    if budget_s is not None and (isinstance(budget_s, bool) or not budget_s > 0):
        raise ConfigError(f"budget_s {budget_s!r} must be a positive number of seconds per "
                          "combination (or None)")
    if budget_s is None and epochs is None:
        budget_s = grid.DEFAULT_BUDGET_S
    device = grid.check_device(device)
    cells = grid.plan(grid.names(backbones, "backbones"), grid.names(precisions, "precisions"),
                      device)
    out = Path(out or f"compare-{spec.name}")
    store = LocalStore(out / "adapters")
    emit = on_progress or (lambda event: None)
    settings = {"budget_s": budget_s, "epochs": epochs, "max_train_examples": max_train_examples,
                "seed": seed, "threads": threads, "device": device,
                "backbones": list(dict.fromkeys(c.backbone for c in cells)),
                "precisions": list(dict.fromkeys(c.precision for c in cells))}
    # the task is checked once, at the door: a config or data error is the task's, not a cell's
    TrainConfig(epochs=epochs, max_seconds=budget_s, max_train_examples=max_train_examples,
                seed=seed, threads=threads).resolved(spec)
    kind = kind_of(spec)
    train_split, dev_split = kind.splits(spec, seed=seed, max_train=max_train_examples)
    baseline = kind.baseline(spec, train_split, dev_split)
    del train_split
    load_before = _load()

    from tqdm.auto import tqdm

    threads_before = torch.get_num_threads()
    if threads:
        torch.set_num_threads(threads)
    runnable = [c for c in cells if c.skipped is None]
    bar = tqdm(total=len(runnable), disable=not progress, desc=f"compare {spec.name}",
               unit="run", dynamic_ncols=True, position=0)
    results: list[dict] = []
    resolved: dict[str, Backbone | str] = {}
    try:
        for i, cell in enumerate(cells):
            if cell.skipped is None:
                bar.set_description(f"compare {spec.name}: {cell.label}")
                emit({"event": "cell", "index": i, "total": len(cells), "backbone": cell.backbone,
                      "precision": cell.precision})
                result = _run_cell(cell, spec, kind, dev_split, store, resolved, device=device,
                                   budget_s=budget_s, epochs=epochs, seed=seed, threads=threads,
                                   max_train_examples=max_train_examples, progress=progress,
                                   emit=emit)
                bar.update(1)
            else:
                result = {"backbone": cell.backbone, "precision": cell.precision,
                          "skipped": cell.skipped}
            results.append(result)
            emit({"event": "result", **result})
        machine = _machine(device, load_before)
    finally:
        bar.close()
        torch.set_num_threads(threads_before)

    scale = Scale.of(spec.metric, [r["dev_metric"] for r in results if "skipped" not in r])
    words = recommendation(results, scale)
    png = out / "compare.png"
    _write_bytes(png, compare_png(results, scale.label, scale.shown, scale.higher_is_better,
                                  f"{spec.name} on {platform.node() or 'this machine'} ({device})"))
    comparison = Comparison(
        task=spec.name, metric=spec.metric, results=results, recommendation=words,
        png=png.resolve(), json_path=(out / "compare.json").resolve(), store=store.root.resolve(),
        settings=settings, machine=machine, baseline=baseline,
        seconds=time.perf_counter() - started,
        created=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()))
    record = comparison.to_dict()
    _write_bytes(comparison.json_path, json.dumps(record, indent=1).encode())
    keep_last(record)
    return comparison


def _run_cell(cell: grid.Cell, spec: TaskSpec, kind, dev_split, store: LocalStore,
              resolved: dict, *, device: str, budget_s, epochs, seed, threads, max_train_examples,
              progress: bool, emit) -> dict:
    """Train (or reuse) and measure one combination; a failure of its own is its `skipped`."""
    head = {"backbone": cell.backbone, "precision": cell.precision}
    try:
        backbone = resolved.get(cell.backbone)
        if backbone is None:
            try:
                backbone = resolved[cell.backbone] = Backbone.resolve(cell.backbone)
            except (AdaptersKitError, OSError, ValueError) as e:
                backbone = resolved[cell.backbone] = f"the backbone cannot be loaded: {e}"
        if isinstance(backbone, str):
            return {**head, "skipped": backbone}
        config = _train_config(cell, device, budget_s=budget_s, epochs=epochs, seed=seed,
                               threads=threads, max_train_examples=max_train_examples,
                               progress=progress)
        path, train_seconds, reused = _trained(cell, spec, config, backbone, store, emit)
        figures = _measure(cell, spec, kind, dev_split, path, backbone, device)
        return {**head, **figures, "train_seconds": train_seconds, "reused": reused,
                "adapter": str(path), "metric": spec.metric}
    except (KeyboardInterrupt, SystemExit):
        raise
    except Exception as e:  # this combination's own failure: reported, the grid goes on
        return {**head, "skipped": f"it failed here: {type(e).__name__}: {e}"}
    finally:
        gc.collect()
        HeapTrimmer(0.0).maybe()


def _train_config(cell: grid.Cell, device: str, **kw) -> TrainConfig:
    quantized = cell.precision in grid.QUANTIZED
    extra = {}
    if quantized:
        extra["quantize"] = cell.precision
    if grid.device_support():
        extra["device"] = device
    return TrainConfig(backbone=cell.backbone, precision="fp32" if quantized else cell.precision,
                       epochs=kw["epochs"], max_seconds=kw["budget_s"],
                       max_train_examples=kw["max_train_examples"], seed=kw["seed"],
                       threads=kw["threads"], progress=kw["progress"], baseline=False,
                       overwrite=True, **extra)


def _engine(cell: grid.Cell, backbone: Backbone, device: str) -> MultiTaskModel:
    quantized = cell.precision in grid.QUANTIZED
    extra = {"quantize": cell.precision} if quantized else {}
    if grid.device_support():
        extra["device"] = device
    return MultiTaskModel(backbone.name, capacity=2,
                          precision="fp32" if quantized else cell.precision, **extra)


KEY_LEAVES_OUT = ("threads", "progress", "resume", "baseline", "overwrite")
"""Settings that do not change the adapter trained."""


def _trained(cell: grid.Cell, spec: TaskSpec, config: TrainConfig, backbone: Backbone,
             store: LocalStore, emit) -> tuple[Path, float, bool]:
    """The cell's adapter: kept from an earlier run with the same key, else trained now.
    Returns (its directory, its training seconds, whether it was reused)."""
    run = config.resolved(spec)
    settings = {k: v for k, v in run.record().items() if k not in KEY_LEAVES_OUT}
    key = grid.train_key(settings, run.task.to_dict(), backbone.path)
    name = cell.store_name(spec.name)
    path = store.path(name)
    marker = store.root / ".compare" / f"{name}.json"
    with contextlib.suppress(OSError, ValueError, KeyError, AdaptersKitError):
        kept = json.loads(marker.read_text())
        if kept["key"] == key and kept["digest"] == sha256_file(path / CHECKSUMS):
            card = read_adapter(path).task  # still whole (its own checksums)
            return path, _recorded_seconds(card), True
    marker.unlink(missing_ok=True)  # whatever was kept is stale now

    def forward(event: dict) -> None:
        emit({**event, "backbone": cell.backbone, "precision": cell.precision})

    train(spec, path, config, on_progress=forward)
    atomic_write_text(marker, json.dumps({"key": key, "digest": sha256_file(path / CHECKSUMS),
                                          "settings": settings}, indent=1, default=str))
    return path, _recorded_seconds(json.loads((path / TASK).read_text())), False


def _recorded_seconds(card: dict) -> float:
    """The training seconds an adapter's card (`task.json`) recorded: a fresh cell and a later
    run that reuses its adapter report the same figure."""
    return float(card["training"]["train_seconds"])


def _measure(cell: grid.Cell, spec: TaskSpec, kind, dev_split, path: Path, backbone: Backbone,
             device: str) -> dict:
    """Dev metric, latency, throughput and bytes of one adapter, on the engine it is served by."""
    model = _engine(cell, backbone, device)
    try:
        name = model.load(path)
        trained = model.tasks[name].spec  # the task as trained (its max_length settled)
        feats = kind.featurize(trained, model.tokenizer, dev_split)
        metrics = kind.evaluate(trained, dev_split, feats, model.run_ids(name, feats.ids))
        requests = measure.Requests(model, name, measure.dev_inputs(dev_split), feats.ids)
        p50, p99, n = measure.latency_ms(requests)
        rps = measure.rows_per_second(requests)
        return {"dev_metric": round(float(metrics[spec.metric]), 5),
                "latency_p50_ms": round(p50, 3), "latency_p99_ms": round(p99, 3),
                "latency_requests": n, "rows_per_second": round(rps, 1),
                "base_resident_bytes": measure.tensor_bytes(model.model),
                "adapter_bytes": measure.adapter_bytes(path),
                "base_disk_bytes": measure.base_disk_bytes(backbone.path)}
    finally:
        del model


def _load() -> list[float] | None:
    with contextlib.suppress(OSError, AttributeError):
        return [round(x, 2) for x in os.getloadavg()]
    return None


def _machine(device: str, load_before) -> dict:
    return {"host": platform.node(), "cpu": platform.processor() or platform.machine(),
            "cpus": os.cpu_count(), "torch_threads": torch.get_num_threads(), "device": device,
            "torch": torch.__version__, "load_average_before": load_before,
            "load_average_after": _load()}


def _write_bytes(path: Path, data: bytes) -> None:
    """Write a file through a temporary sibling and a rename."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, default_file_mode())  # as an ordinary new file, not mkstemp's 0o600
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
