"""What every command's arguments share: the parser that lets `--json` report usage errors,
argparse types, the `--device` and `--json` flags, and the device a command runs on."""

from __future__ import annotations

import argparse
import sys


class UsageError(Exception):
    """A command-line mistake, raised instead of argparse's exit so `--json` can report it."""


class Parser(argparse.ArgumentParser):
    def error(self, message: str):
        raise UsageError(message, self)


def count(what: str):
    """An argparse type: a whole number of 1 or more, named `what` in its error."""
    def parse(text: str) -> int:
        if not text.isdigit() or int(text) < 1:
            raise argparse.ArgumentTypeError(f"{text!r} is not {what}; give 1 or more")
        return int(text)
    return parse


thread_count = count("a thread count")


def json_flag(p: argparse.ArgumentParser, what: str = "print one JSON object on stdout (an "
              "error too)") -> None:
    p.add_argument("--json", action="store_true", help=what)


def device_flag(p: argparse.ArgumentParser, what: str = "where to run") -> None:
    p.add_argument("--device", default="auto", metavar="auto|cpu|cuda|cuda:N",
                   help=f"{what}: auto (default) = a GPU when one is visible, else the CPU")


def announce_device(requested: str, quiet: bool = False):
    """`requested` resolved; says on stderr which device it chose (not when `quiet`, e.g. under
    `--json`, whose output carries a `device` key instead)."""
    from ..devices import choice_note, resolve_device
    from ..training.distributed import is_main_process

    device = resolve_device(requested)
    if not quiet and is_main_process():
        print(f"adapters-kit: {choice_note(requested, device)}", file=sys.stderr, flush=True)
    return device


def device_of(args: argparse.Namespace, quiet: bool = False):
    """The command's `--device`, resolved and announced (see `announce_device`)."""
    return announce_device(args.device, quiet or getattr(args, "json", False))
