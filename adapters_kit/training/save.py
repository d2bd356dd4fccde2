"""The end of a run: the best state back in the model, its report and warnings, the adapter
directory written through the store, the checkpoint removed, and the `TrainResult`."""

from __future__ import annotations

import contextlib
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import torch

from ..adapters.store import WEIGHTS, save_adapter
from ..backbones import Backbone
from ..backbones.quantize import Quantization
from ..tasks.kinds import Kind
from .checkpoint import Checkpoint
from .config import ResolvedConfig
from .data import TrainingData
from .distributed import Processes
from .evaluate import DevEvaluator
from .fit import FitState
from .plots import confusion_png, curves_png
from .quality import QualityWarning, quality_warnings


@dataclass
class TrainResult:
    path: Path
    metrics: dict[str, float]
    baseline: dict[str, float]
    train_seconds: float
    examples_seen: int
    adapter_bytes: int
    history: dict = field(default_factory=dict)
    report: dict = field(default_factory=dict)
    """The kept checkpoint's per-class scores and confusion matrix on dev (see `class_report`)."""
    warnings: list[str] = field(default_factory=list)
    """Never-predicted classes, a score below the baseline: also raised as `QualityWarning`s."""
    class_weights: dict[str, float] | None = None
    class_weights_note: str | None = None
    """Set when the loss was weighted by default (a class under 5% of the training rows)."""
    test_metrics: dict[str, float] = field(default_factory=dict)
    """The kept adapter's metrics on the card's `test` split ({} when it names none)."""
    test_baseline: dict[str, float] = field(default_factory=dict)
    """The TF-IDF baseline's on the same test rows."""
    device: str = "cpu"
    """The device trained on (`TrainConfig.device` decided), e.g. `cuda:0`."""

    @property
    def examples_per_second(self) -> float:
        return self.examples_seen / max(self.train_seconds, 1e-9)

    def to_dict(self) -> dict:
        return {"path": str(self.path), "metrics": self.metrics, "baseline": self.baseline,
                "train_seconds": round(self.train_seconds, 2), "examples_seen": self.examples_seen,
                "examples_per_second": round(self.examples_per_second, 1),
                "adapter_bytes": self.adapter_bytes, "class_weights": self.class_weights,
                "class_weights_note": self.class_weights_note, "test_metrics": self.test_metrics,
                "test_baseline": self.test_baseline, "report": self.report, "warnings": self.warnings,
                "device": self.device}


def save(out_dir: Path, model: torch.nn.Module, state: FitState, *, kind: Kind, run: ResolvedConfig,
         data: TrainingData, evaluate: DevEvaluator, backbone: Backbone, base_fingerprint: str,
         procs: Processes, checkpoint: Checkpoint, emit, extra_meta: dict | None = None) -> TrainResult:
    """Write the best evaluation's adapter to `out_dir` (the main process) and report it;
    `extra_meta` adds keys to task.json (a distilled adapter's `teacher`)."""
    from peft import set_peft_model_state_dict

    spec, train_split, dev_split = data.spec, data.train_split, data.dev_split
    if state.best_state is not None:
        set_peft_model_state_dict(model, state.best_state)
    # The best state's dev metrics were computed when it was kept (evaluation is deterministic).
    final = state.best_metrics
    if final is None or evaluate.kept is None:  # nothing kept, or resumed: its outputs are gone
        metrics = evaluate()
        final = final or metrics
        evaluate.keep()
    baseline = procs.from_main(kind.baseline(spec, train_split, dev_split)
                               if run.baseline and procs.is_main else {})
    report = kind.report(spec, dev_split, data.dev_feats, evaluate.kept)
    test_metrics, test_report = evaluate.test()
    test_baseline = procs.from_main(kind.baseline(spec, train_split, data.test_split)
                                    if test_metrics and run.baseline and procs.is_main else {})
    train_counts = kind.label_counts(spec, train_split)
    notes = quality_warnings(spec, report, train_counts, final, baseline)
    if procs.is_main:
        for note in notes:
            warnings.warn(f"{spec.name}: {note}", QualityWarning, stacklevel=3)
    best_step = state.stopping.best_step
    quantization = Quantization.of(run.quantize, run.double_quant)  # trained on; the fingerprint
    # stays the unquantized base's
    task_meta = {
        "task": spec.to_dict(),
        "backbone": {"name": backbone.name, "arch": backbone.arch, "fingerprint": base_fingerprint,
                     "base_dir": str(backbone.path), "description": backbone.description,
                     **({"quantization": quantization.record()} if quantization else {})},
        "metrics": final,
        "tfidf_baseline": baseline,
        **({"test_metrics": test_metrics, "test_tfidf_baseline": test_baseline,
            "test_report": test_report} if test_metrics else {}),
        "training": {**run.record(),
                     "train_examples": len(train_split), "dev_examples": len(dev_split),
                     "train_rows": len(data.train_feats.ids),
                     "skipped_examples": len(getattr(train_split, "skipped", [])),
                     "steps": state.step, "best_step": best_step,
                     "train_seconds": round(state.seconds, 2), "examples_seen": state.seen,
                     "stopped_early": state.stopped_early, "processes": procs.size,
                     "class_weight_values": data.weights_used, "train_label_counts": train_counts,
                     **({"class_weights_note": data.weighting_note} if data.weighting_note else {}),
                     **({"test_examples": len(data.test_split)} if test_metrics else {})},
        "history": {"evals": state.evals},
        "dev_report": report,
        "warnings": notes,
        **(extra_meta or {}),
    }
    if procs.is_main:
        extra = {"curves.png": curves_png(state.losses, state.evals, spec.metric,
                                          f"{spec.name} on {backbone.name}")}
        if report.get("confusion_matrix"):
            extra["confusion.png"] = confusion_png(report["confusion_matrix"], report["labels"],
                                                   f"{spec.name}: dev, best step {best_step}")
        save_adapter(out_dir, model, task_meta, overwrite=run.overwrite, extra_files=extra)
        checkpoint.remove()
        with contextlib.suppress(OSError):
            checkpoint.dir.parent.rmdir()  # only when no other task's checkpoint is in it
    procs.wait()  # the adapter is complete before any process returns its path
    emit({"event": "done", "step": state.step, "best_step": best_step, "metrics": final,
          **({"test_metrics": test_metrics} if test_metrics else {}),
          "path": str(out_dir), "seconds": round(state.seconds, 1)})
    nbytes = (out_dir / WEIGHTS).stat().st_size + (out_dir / "adapter_config.json").stat().st_size
    return TrainResult(path=out_dir, metrics=final, baseline=baseline, train_seconds=state.seconds,
                       examples_seen=state.seen, adapter_bytes=nbytes,
                       history={"evals": state.evals, "best_step": best_step, "losses": state.losses},
                       report=report, warnings=notes, class_weights=data.weights_used,
                       class_weights_note=data.weighting_note, test_metrics=test_metrics,
                       test_baseline=test_baseline, device=run.device)
