"""Command-line flags made from a typed dataclass config, the litgpt way: the field

    max_seconds: float | None = None
    \"\"\"Stop training after this many seconds.\"\"\"

becomes `--max-seconds MAX_SECONDS` (type float, help: its docstring). `bool` becomes
`--x/--no-x`, a `Literal` gives the choices, `list[X]` takes one or more values, `X | None` is
X (a union's first member decides). Every flag's default is None, meaning "not given": the
config's own default (or, for the server, the environment) applies, so the flags and the
dataclass cannot disagree about a default."""

from __future__ import annotations

import argparse
import ast
import functools
import inspect
import textwrap
import types
import typing
from collections.abc import Mapping
from dataclasses import MISSING, Field, dataclass, field, fields, is_dataclass
from pathlib import Path


@functools.cache
def field_docs(cls: type) -> dict[str, str]:
    """Each field's attribute docstring (the string right under it), whitespace collapsed; the
    bases' fields too."""
    docs: dict[str, str] = {}
    for klass in reversed(cls.__mro__):
        if not is_dataclass(klass):
            continue
        body = ast.parse(textwrap.dedent(inspect.getsource(klass))).body[0].body
        for stmt, after in zip(body, body[1:]):
            if (isinstance(stmt, ast.AnnAssign) and isinstance(stmt.target, ast.Name)
                    and isinstance(after, ast.Expr) and isinstance(after.value, ast.Constant)
                    and isinstance(after.value.value, str)):
                docs[stmt.target.id] = " ".join(after.value.value.split())
    return docs


def _kind(hint, name: str) -> dict:
    """`add_argument` keywords for a field of type `hint`."""
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        hint = next(a for a in typing.get_args(hint) if a is not type(None))
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if hint is bool:
        return {"action": argparse.BooleanOptionalAction}
    if origin is typing.Literal:
        return {"type": type(args[0]), "choices": list(args)}
    if origin is list and args and args[0] in (int, float, str, Path):
        return {"type": args[0], "nargs": "+"}
    if hint in (int, float, str, Path):
        return {"type": hint}
    raise TypeError(f"field {name!r} has type {hint!r}, which makes no flag by itself; give it a "
                    "`type` in the command's `custom`, or list it in `skip` with the reason")


def _default(f: Field):
    if f.default is not MISSING:
        return f.default
    return f.default_factory() if f.default_factory is not MISSING else MISSING


def _shown(value) -> str:
    if isinstance(value, bool):
        return "on" if value else "off"
    return str(value)


@dataclass(frozen=True)
class ConfigFlags:
    """The flags of one command made from the fields of the dataclass `cls`."""

    cls: type
    skip: Mapping[str, str] = field(default_factory=dict)
    """Fields that get no flag, each with the reason (shown nowhere; it is for the reader)."""
    custom: Mapping[str, Mapping] = field(default_factory=dict)
    """Per field, `add_argument` keywords that replace the generated ones; `flag` renames it
    (e.g. learning_rate -> `--lr`, the name the command has always had)."""
    env_prefix: str | None = None
    """Where the command also reads each field from `env_prefix + FIELD_NAME`: said in the help."""

    def names(self) -> list[str]:
        """The fields that are flags, in field order."""
        unknown = (set(self.skip) | set(self.custom)) - {f.name for f in fields(self.cls)}
        if unknown:
            raise TypeError(f"{sorted(unknown)} are no fields of {self.cls.__name__}; remove them "
                            "from the command's skip/custom")
        return [f.name for f in fields(self.cls) if f.name not in self.skip]

    def add_to(self, parser: argparse.ArgumentParser) -> None:
        """One flag per field in `names()`, its help the field's docstring and its default."""
        hints = typing.get_type_hints(self.cls)
        docs = field_docs(self.cls)
        by_name = {f.name: f for f in fields(self.cls)}
        for name in self.names():
            kwargs = dict(self.custom.get(name, {}))
            flag = kwargs.pop("flag", "--" + name.replace("_", "-"))
            doc = docs.get(name)
            if not doc and "help" not in kwargs:
                raise TypeError(f"{self.cls.__name__}.{name} has no docstring; write one under the "
                                "field: it is the help of its flag")
            default = _default(by_name[name])
            notes = [f"default: {_shown(default)}"] if default not in (None, MISSING) else []
            if self.env_prefix:
                notes.append(f"or {self.env_prefix}{name.upper()}")
            help_ = kwargs.pop("help", doc) + (f" ({'; '.join(notes)})" if notes else "")
            kwargs = {**_kind(hints[name], name), **kwargs}
            parser.add_argument(flag, dest=name, default=None, help=help_.replace("%", "%%"),
                                **kwargs)

    def given(self, args: argparse.Namespace) -> dict:
        """The fields given on the command line (None: not given), to build `cls` from."""
        return {n: getattr(args, n) for n in self.names() if getattr(args, n) is not None}
