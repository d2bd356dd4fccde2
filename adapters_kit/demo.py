"""`adapters-kit demo`: two task adapters trained and hot-swapped on one embedded base model."""

from __future__ import annotations

import time
from pathlib import Path

DEMO_TASKS = ("support_intent", "support_urgency")
MESSAGES = [
    "I was billed twice for the same order, please refund one of the charges",
    "The app freezes whenever I try to upload a photo",
    "Our whole team is locked out and the launch is in an hour!",
    "Could you tell me when my parcel is expected to arrive?",
]


def run_demo(out: Path, backbone: str = "embedded-distilbert") -> None:
    from .backbones import Backbone
    from .engine.model import MultiTaskModel
    from .training.loop import TrainConfig, train

    started = time.perf_counter()
    resolved = Backbone.resolve(backbone)
    print(f"backbone: {backbone} — {resolved.description}")
    print(f"base folder: {resolved.path}\n")
    for task in DEMO_TASKS:
        result = train(task, out / task, TrainConfig(backbone=backbone, overwrite=True))
        print(f"  {task}: dev accuracy {result.metrics['accuracy']:.3f} "
              f"(TF-IDF {result.baseline.get('accuracy', float('nan')):.3f}), "
              f"{result.train_seconds:.0f} s, adapter {result.adapter_bytes:,} bytes\n")

    model = MultiTaskModel(backbone)
    for task in DEMO_TASKS:
        model.load(out / task)
    print(f"one base model, {len(model.tasks)} adapters resident: {', '.join(model.tasks)}\n")
    for task in DEMO_TASKS:  # swap: the same messages through each task's adapter in turn
        print(f"[{task}]")
        for text, p in zip(MESSAGES, model.predict(task, MESSAGES)):
            print(f"  {p['label']:<10} {p['scores'][p['label']]:.2f}  {text}")
    print("\n[one mixed batch: every row picks its own task]")
    mixed = [(DEMO_TASKS[i % 2], text) for i, text in enumerate(MESSAGES)]
    for (task, text), p in zip(mixed, model.predict_mixed(mixed)):
        print(f"  {task:<16} {p['label']:<10} {text}")
    print(f"\ndemo finished in {time.perf_counter() - started:.0f} s; adapters in {out}/")
