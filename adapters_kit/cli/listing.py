"""Commands that list what there is: `tasks`, `backbones`."""

from __future__ import annotations

import argparse
from pathlib import Path

from .args import json_flag
from .report import print_json


def cmd_tasks(args: argparse.Namespace) -> int:
    from ..tasks import list_tasks

    specs = list_tasks()
    if args.json:
        print_json({"tasks": [{"name": s.name, "kind": s.kind, "labels": s.labels,
                               "text_fields": s.text_fields, "metric": s.metric,
                               "train": s.train, "description": s.description} for s in specs]})
        return 0
    width = max(len(s.name) for s in specs)
    for s in specs:
        data = "data ok" if s.train and (s.format == "hub" or Path(s.train).exists()) else "no data"
        print(f"{s.name:<{width}}  {s.kind:<14} {len(s.labels) or '-':>3} labels  {data:<8} "
              f"{s.description}")
    return 0


def cmd_backbones(args: argparse.Namespace) -> int:
    from ..backbones import describe_backbones
    from ..comparison import last_comparison, summary

    rows = describe_backbones()
    last = last_comparison()  # the figures of the last `compare` run here, if any
    if args.json:
        print_json({"backbones": rows, "last_compare": last})
    else:
        for r in rows:
            print(f"{r['name']:<20} {r['description']}")
        print("Any hub name or local folder of a DistilBERT or ALBERT model also works "
              "(e.g. distilbert-base-uncased, albert-base-v2).")
        print("\n" + summary(last) if last else
              "\nRun `adapters-kit compare TASK` to measure them on your task and this machine.")
    return 0


def add_tasks(sub) -> argparse.ArgumentParser:
    p = sub.add_parser("tasks", help="list the registered tasks (bundled cards, ADAPTERS_KIT_TASKS)")
    json_flag(p, "print the tasks as one JSON object")
    return p


def add_backbones(sub) -> argparse.ArgumentParser:
    p = sub.add_parser("backbones", help="list the embedded backbones and their trade-off")
    json_flag(p, "print the backbones and the last `compare` figures as one JSON object")
    return p
