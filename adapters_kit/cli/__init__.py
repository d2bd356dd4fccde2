"""The `adapters-kit` command: a thin layer over the Python API.

One module per command group: `listing` (tasks, backbones), `train` (train, train-many),
`compare` (compare, demo), `adapters` (eval, predict, merge), `serve` (serve, jobs). The
settings flags of train, train-many and serve are made from the fields of TrainConfig and
ServeConfig (`flags`). This module only wires them: the parser and `main`."""

from __future__ import annotations

import os
import sys

from ..errors import AdaptersKitError, TrainingInterrupted
from . import distill
from .adapters import add_eval, add_merge, add_predict, cmd_eval, cmd_merge, cmd_predict
from .args import Parser, UsageError
from .compare import add_compare, add_demo, cmd_compare, cmd_demo
from .listing import add_backbones, add_tasks, cmd_backbones, cmd_tasks
from .report import fail
from .serve import add_jobs, add_serve, cmd_jobs, cmd_serve
from .train import add_train, add_train_many, cmd_train, cmd_train_many

__all__ = ["build_parser", "main"]


def build_parser() -> Parser:
    ap = Parser(prog="adapters-kit", description=(
        "Train small LoRA task adapters for DistilBERT or ALBERT and serve many on one base."))
    sub = ap.add_subparsers(dest="command", required=True)
    # the commands are looked up here, when the parser is built (tests replace them)
    for add, command in ((add_tasks, cmd_tasks), (add_backbones, cmd_backbones),
                         (add_train, cmd_train), (add_train_many, cmd_train_many),
                         (add_compare, cmd_compare), (add_eval, cmd_eval),
                         (add_predict, cmd_predict), (add_merge, cmd_merge),
                         (add_serve, cmd_serve), (add_jobs, cmd_jobs), (add_demo, cmd_demo)):
        add(sub).set_defaults(func=command)
    distill.add_parsers(sub)  # distill, and `backbones make`
    return ap


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    argv = sys.argv[1:] if argv is None else list(argv)
    as_json = "--json" in argv
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except UsageError as e:
        message, refusing = e.args  # the (sub)command that refused the arguments
        if as_json:
            return fail(as_json, 2, "UsageError", f"{refusing.prog}: {message}")
        refusing.print_usage(sys.stderr)
        print(f"{refusing.prog}: error: {message}", file=sys.stderr)  # as argparse words it
        return 2
    try:
        return args.func(args)
    except TrainingInterrupted as e:  # stopped on request: resumable, as after Ctrl-C
        return fail(as_json, 130, "Interrupted", str(e))
    except (AdaptersKitError, FileExistsError) as e:  # a user's mistake; any other error is a bug
        return fail(as_json, 2, type(e).__name__, str(e))
    except KeyboardInterrupt:
        return fail(as_json, 130, "Interrupted", "interrupted; `train` resumes from its last "
                    "checkpoint if run again")
    except Exception as e:
        if not as_json:
            raise
        import traceback

        traceback.print_exc()  # the details, for a bug report; stdout keeps the JSON
        return fail(as_json, 1, type(e).__name__, f"{e} (an internal error: please report it)")
