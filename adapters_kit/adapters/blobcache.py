"""A local, content-addressed cache of adapter versions, bounded in bytes, evicted LRU.

    cache = BlobCache(Path("~/.cache/adapters_kit/objects"), max_bytes=2 << 30)
    folder = cache.get(digest) or cache.put(digest, {"adapter_config.json": b"...", ...})

An entry is one adapter version's files, under the version's digest (sha256 of its
checksums.json, which names the sha256 of every other file): the key names the content, so an
entry never goes stale and two tasks with the same files share it. Entries are written with
`atomic_directory` (a crash leaves none or a complete one) and used only after the reader has
verified them (`read_adapter`, then the digest). Last use is the entry folder's mtime, so
several processes may share one cache folder; each evicts the oldest entries until the whole
folder fits its bound again, never the entry it has just written.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import threading
import time
from pathlib import Path

from ..files import _TMP_PREFIX, atomic_directory, default_file_mode, recover_directory

_KEY = re.compile(r"[0-9a-f]{64}")


def _check_key(key: str) -> str:
    if not _KEY.fullmatch(key):
        raise ValueError(f"cache key {key!r} is not a sha256 hex digest")
    return key


def _entry_bytes(folder: Path) -> int:
    with contextlib.suppress(OSError):
        return sum(p.stat().st_size for p in folder.iterdir() if p.is_file())
    return 0


class BlobCache:
    """Adapter versions by digest in `root`, at most `max_bytes` of files in all (LRU)."""

    def __init__(self, root: str | Path, max_bytes: int = 2 << 30) -> None:
        if max_bytes <= 0:
            raise ValueError(f"max_bytes must be > 0, got {max_bytes}")
        self.root = Path(root).expanduser()
        self.max_bytes = max_bytes
        self.evictions = 0
        self._lock = threading.Lock()

    def path(self, key: str) -> Path:
        return self.root / _check_key(key)

    def get(self, key: str) -> Path | None:
        """The entry's folder, marked as just used; None if it is not cached."""
        folder = self.path(key)
        with contextlib.suppress(OSError):
            os.utime(folder)  # last use: the LRU order, shared with other processes
            return folder
        return None

    def put(self, key: str, files: dict[str, bytes]) -> Path:
        """Store `files` (already verified by the caller) as entry `key`; return its folder.

        Evicts least recently used entries until the cache fits `max_bytes` again; the new
        entry stays even if it alone is larger (it is about to be used)."""
        folder = self.path(key)
        with self._lock:
            recover_directory(self.root)
            try:
                with atomic_directory(folder) as tmp:
                    for name, data in files.items():
                        if "/" in name or name.startswith("."):
                            raise ValueError(f"file name {name!r} is not a plain file name")
                        (tmp / name).write_bytes(data)
            except (FileExistsError, OSError):
                if not folder.is_dir():  # another process wrote the same content first: use it
                    raise
            with contextlib.suppress(OSError):
                mode = default_file_mode()
                for p in folder.iterdir():
                    os.chmod(p, mode)
                os.utime(folder)
            self._evict(keep=key)
        return folder

    def discard(self, key: str) -> None:
        """Remove an entry (it failed its verification): the next read fetches it again."""
        with self._lock:
            self._remove(self.path(key))

    def entries(self) -> list[tuple[str, int, float]]:
        """(key, bytes, last use), oldest first."""
        out = []
        with contextlib.suppress(OSError):
            for p in self.root.iterdir():
                if _KEY.fullmatch(p.name) and p.is_dir():
                    with contextlib.suppress(OSError):
                        out.append((p.name, _entry_bytes(p), p.stat().st_mtime))
        return sorted(out, key=lambda e: e[2])

    @property
    def nbytes(self) -> int:
        return sum(n for _, n, _ in self.entries())

    def _evict(self, keep: str) -> None:
        entries = self.entries()
        total = sum(n for _, n, _ in entries)
        for key, n, _ in entries:
            if total <= self.max_bytes:
                break
            if key == keep:
                continue
            self._remove(self.root / key)
            self.evictions += 1
            total -= n

    def _remove(self, folder: Path) -> None:
        # renamed aside first: a reader sees the entry whole or not at all
        aside = folder.with_name(f"{_TMP_PREFIX}evict-{folder.name}-{os.getpid()}-{time.time_ns()}")
        with contextlib.suppress(OSError):
            os.replace(folder, aside)
            shutil.rmtree(aside, ignore_errors=True)
