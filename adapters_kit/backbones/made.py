"""The registry of made student backbones: NAME -> its local folder, kept in the cache.

`adapters-kit backbones make NAME ...` (`students.make_student`) writes a student folder and
records it here, so that `--backbone NAME` resolves in any later process, as an embedded name
does. The registry is one JSON file, rewritten whole through a temporary file and a rename
under an exclusive lock, so two makers never lose each other's entry.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import re
from collections.abc import Iterator
from pathlib import Path

from ..errors import BackboneError
from ..files import atomic_write_text
from .embedded import cache_root

NAME = re.compile(r"^[a-z0-9][a-z0-9._-]{0,63}$")


def registry_path() -> Path:
    """Where the made students are listed (under `ADAPTERS_KIT_CACHE` when set)."""
    return cache_root() / "students" / "registry.json"


def check_name(name: str) -> str:
    """A student name, checked: lower case, not an embedded name, not a path."""
    if not isinstance(name, str) or not NAME.match(name) or name.startswith("embedded-"):
        raise BackboneError(
            f"student name {name!r} must be 1-64 lower-case letters, digits, '.', '_' or '-', "
            "starting with a letter or digit, and not start with 'embedded-' (e.g. mini-3)")
    return name


def read_registry() -> dict[str, dict]:
    """Every registered student: name -> its record (`path`, `teacher`, `style`, ...)."""
    try:
        data = json.loads(registry_path().read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


@contextlib.contextmanager
def _locked() -> Iterator[None]:
    path = registry_path().with_suffix(".lock")
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def register(name: str, record: dict) -> None:
    """Record student `name` (its `path` and how it was made), replacing an older record."""
    check_name(name)
    with _locked():
        data = read_registry()
        data[name] = record
        atomic_write_text(registry_path(), json.dumps(data, indent=1, sort_keys=True))


def unregister(name: str) -> bool:
    """Forget student `name` (its folder stays); True when it was registered."""
    with _locked():
        data = read_registry()
        if data.pop(name, None) is None:
            return False
        atomic_write_text(registry_path(), json.dumps(data, indent=1, sort_keys=True))
        return True


def student_dir(name: str) -> Path | None:
    """The folder of registered student `name`, or None when no student has that name."""
    if not isinstance(name, str) or not NAME.match(name):
        return None
    record = read_registry().get(name)
    if record is None:
        return None
    path = Path(record["path"])
    if not (path / "config.json").is_file():
        raise BackboneError(f"student backbone {name!r} is registered at {path}, which holds no "
                            "model any more; make it again with `adapters-kit backbones make "
                            f"{name} --from TEACHER ... --overwrite`")
    return path
