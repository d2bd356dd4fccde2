"""The folder store: a local folder of adapter directories, one per task name.

    STORE/NAME/adapter_config.json ...   one adapter directory (the format of `store.py`)
    STORE/.checkpoints/NAME              a training's resume state (training owns it)

A publish copies a verified source into a staging folder beside NAME and renames it into
place (`atomic_directory`): a reader, or a process killed at any point, sees the old adapter or
the new one, complete. `open_store` (door.py) opens this store for a path.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

from ..errors import AdapterFileError
from ..files import atomic_directory, recover_directory
from . import meta
from .store import CHECKSUMS, TASK, AdapterFiles, check_name, read_adapter


@dataclass
class LocalStore:
    """A folder of adapter directories, one per task name."""

    root: Path
    """The folder; it need not exist until something is published into it."""
    remote: ClassVar[bool] = False

    def __post_init__(self) -> None:
        self.root = Path(self.root)

    def path(self, name: str) -> Path:
        """The adapter directory of `name` (a folder store's own: a remote store has none)."""
        return self.root / name

    def recover(self) -> None:
        """Put back what a killed replace moved aside; remove dead writers' staging folders
        (a killed PUT's copy, a killed training's checkpoint write)."""
        recover_directory(self.root)
        recover_directory(self.root / ".checkpoints")

    def has(self, name: str) -> bool:
        """True if the store holds an adapter named `name` (its task.json is there)."""
        return (self.path(name) / TASK).is_file()

    def exists(self, name: str) -> bool:
        """True if anything (complete or not) sits under `name`."""
        return self.path(name).is_dir()

    def names(self) -> list[str]:
        """The adapters held, sorted (after `recover`, so a killed replace is undone first)."""
        if not self.root.is_dir():
            return []
        self.recover()
        return sorted(p.name for p in self.root.iterdir()
                      if p.is_dir() and not p.name.startswith(".") and (p / TASK).exists())

    def info(self, name: str) -> dict:
        """The adapter's task.json, unverified (for listings); OSError/ValueError if unreadable."""
        path = self.path(name) / TASK
        if path.stat().st_size > meta.MAX_METADATA_BYTES:
            raise ValueError(f"{path} is over {meta.MAX_METADATA_BYTES} bytes")
        return json.loads(path.read_bytes())

    def read(self, name: str, max_weight_bytes: int | None = None) -> AdapterFiles:
        """The adapter `name`, verified (`read_adapter`)."""
        if not (self.path(name)).is_dir():
            known = ", ".join(self.names()) or "none"
            raise AdapterFileError(f"no adapter {name!r} in store {self.root}; it holds: {known}")
        return read_adapter(self.path(name), max_weight_bytes=max_weight_bytes)

    def publish(self, name: str, source: str | Path, digest: str | None = None) -> str:
        """Install the adapter directory `source` as `name`, replacing any adapter there, in one
        rename; its digest. The store is unchanged if anything is refused.

        `digest`: the version the caller checked (`AdapterFiles.digest`); refused if `source`
        holds another by now. Only the files checksums.json lists are copied, never through a
        link that leads out of `source`, and no file's permissions are widened."""
        check_name(name)
        source = Path(source)
        expected = digest or read_adapter(source).digest
        sums_path = source / CHECKSUMS
        if sums_path.is_file() and sums_path.stat().st_size <= meta.MAX_METADATA_BYTES:
            sums_data = sums_path.read_bytes()
        else:
            sums_data = b""
        if hashlib.sha256(sums_data).hexdigest() != expected:
            raise _changed(source)
        listed = [*json.loads(sums_data), CHECKSUMS]
        recover_directory(self.root)
        with atomic_directory(self.path(name), overwrite=True, keep_modes=True) as staged:
            for file_name in listed:
                _copy_inside(source, file_name, staged / file_name)
            copy = read_adapter(staged)  # what takes the name, byte for byte
            if copy.digest != expected:
                raise _changed(source)
        return expected


def _changed(source: Path) -> AdapterFileError:
    return AdapterFileError(f"adapter {source} changed while it was being copied; send it "
                            "again once it is complete")


def _copy_inside(source: Path, name: str, dest: Path) -> None:
    """Copy source/name to dest; refuse a link that resolves outside `source`."""
    real_root, real = os.path.realpath(source), os.path.realpath(source / name)
    if os.path.commonpath([real_root, real]) != real_root:
        raise AdapterFileError(f"adapter {source} refused: {name} is a link to a file outside "
                               "the adapter directory; copy the real files into it (cp -L)")
    with open(real, "rb") as src:
        mode = os.fstat(src.fileno()).st_mode & 0o644  # never wider than the source's
        fd = os.open(dest, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
        with os.fdopen(fd, "wb") as out:
            shutil.copyfileobj(src, out)
            os.fchmod(out.fileno(), mode)
