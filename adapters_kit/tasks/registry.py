"""The task registry and task cards (TOML files): the bundled cards, `ADAPTERS_KIT_TASKS`,
`register_task`, `get_task` and `list_tasks`."""

from __future__ import annotations

import os
import sys
from importlib import resources
from pathlib import Path

from ..errors import TaskError
from .reading import SHARED, shared_data_dir
from .spec import TaskSpec

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

_REGISTRY: dict[str, TaskSpec] = {}
_CARDS_LOADED: set[Path] = set()


def bundled_cards_dir() -> Path:
    """The cards that ship with the package (package data: `adapters_kit/cards/`)."""
    return Path(str(resources.files(__package__).joinpath("cards")))


def cards_dirs() -> list[Path]:
    """The bundled cards, then the folders in `ADAPTERS_KIT_TASKS` (`os.pathsep`-separated)."""
    dirs = [bundled_cards_dir()]
    extra = os.environ.get("ADAPTERS_KIT_TASKS")
    if extra:
        dirs += [Path(p) for p in extra.split(os.pathsep) if p]
    return [d for d in dirs if d.is_dir()]


def _expand(value: str | None, card_dir: Path) -> str | None:
    if value is None:
        return None
    if value.startswith(SHARED):
        shared = shared_data_dir()  # unknown: kept as written; reading it says what to set
        return value if shared is None else str(shared) + value[len(SHARED) :]
    p = Path(value).expanduser()
    return str(p if p.is_absolute() or value.startswith(("hf://",)) else (card_dir / p))


def load_card(path: str | Path) -> TaskSpec:
    """Read one TOML task card. Relative data paths are relative to the card's folder."""
    path = Path(path)
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
        raise TaskError(f"cannot read task card {path}: {e}") from e
    data = raw.get("data", {})
    if data.get("format") != "hub":
        for key in ("train", "dev", "test"):
            if key in data:
                data[key] = _expand(data[key], path.parent)
    return TaskSpec.from_dict(raw, source=str(path))


def load_cards(directory: str | Path) -> list[TaskSpec]:
    """Register every `*.toml` card in `directory`; a card already registered is skipped."""
    directory = Path(directory).resolve()
    specs = []
    for card in sorted(directory.glob("*.toml")):
        spec = load_card(card)
        if spec.name not in _REGISTRY:
            _REGISTRY[spec.name] = spec
        specs.append(spec)
    _CARDS_LOADED.add(directory)
    return specs


def _ensure_cards() -> None:
    for d in cards_dirs():
        if d.resolve() not in _CARDS_LOADED:
            load_cards(d)


def register_task(spec: TaskSpec | None = None, /, *, replace: bool = False, **kwargs) -> TaskSpec:
    """Add a task to the registry: `register_task(TaskSpec(...))` or `register_task(name=..., ...)`."""
    _ensure_cards()
    if spec is None:
        spec = TaskSpec(**kwargs)
    elif kwargs:
        raise TaskError("pass either a TaskSpec or keyword fields to register_task, not both")
    if spec.name in _REGISTRY and not replace:
        raise TaskError(f"task {spec.name!r} is already registered; pick another name or pass "
                        "replace=True")
    _REGISTRY[spec.name] = spec
    return spec


def get_task(name: str) -> TaskSpec:
    _ensure_cards()
    if name in _REGISTRY:
        return _REGISTRY[name]
    p = Path(name)
    if p.suffix == ".toml" and p.is_file():
        return load_card(p)
    known = ", ".join(sorted(_REGISTRY)) or "none"
    raise TaskError(f"unknown task {name!r}; known tasks: {known}. Add one with a TOML card in "
                    "a folder named by ADAPTERS_KIT_TASKS, or register_task(...)")


def list_tasks() -> list[TaskSpec]:
    _ensure_cards()
    return [_REGISTRY[k] for k in sorted(_REGISTRY)]
