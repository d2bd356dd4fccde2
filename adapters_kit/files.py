"""Atomic directory writes and file hashing."""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import errno
import hashlib
import os
import shutil
import socket
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

_TMP_PREFIX = ".tmp-"
_AT_FDCWD = -100
_RENAME_EXCHANGE = 2


def _load_renameat2():
    with contextlib.suppress(OSError, AttributeError, TypeError):
        libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
        fn = libc.renameat2
        fn.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p,
                       ctypes.c_uint]
        fn.restype = ctypes.c_int
        return fn
    return None


_renameat2 = _load_renameat2()


def exchange(a: Path, b: Path) -> bool:
    """Swap two existing paths in one atomic step (Linux renameat2 RENAME_EXCHANGE).

    Returns False where the system or filesystem cannot do it; the caller falls back.
    """
    if _renameat2 is None:
        return False
    if _renameat2(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE) == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP, errno.ENOTSUP, errno.EXDEV):
        return False
    raise OSError(err, os.strerror(err), str(a), None, str(b))


def default_file_mode() -> int:
    """0o666 less the process umask: the mode an ordinary new file gets (safetensors writes
    0o600, which would keep another user's server from reading an adapter)."""
    with contextlib.suppress(OSError, ValueError):
        with open("/proc/self/status") as f:  # reading the umask without changing it
            for line in f:
                if line.startswith("Umask:"):
                    return 0o666 & ~int(line.split()[1], 8)
    return 0o644


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def _fsync_tree(root: Path) -> None:
    for dirpath, _, files in os.walk(root):
        for name in files:
            with open(os.path.join(dirpath, name), "rb") as f:
                os.fsync(f.fileno())


def _staging_prefix(name: str) -> str:
    """`.tmp-NAME~PID@HOST~`: whose staging directory this is, so that the next start can tell
    a dead writer's leftovers (removed at once) from a live writer's work (left alone)."""
    return f"{_TMP_PREFIX}{name}~{os.getpid()}@{socket.gethostname()}~"


def _writer_dead(path: Path) -> bool:
    """True if `path` is a staging directory of a process of this host that no longer runs."""
    parts = path.name.split("~")
    if len(parts) != 3 or "@" not in parts[1]:
        return False
    pid, _, host = parts[1].partition("@")
    if host != socket.gethostname() or not pid.isdigit():
        return False  # another machine's writer (a shared store): only its age tells
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return True
    except OSError:  # alive, another user's
        return False
    return False


def recover_directory(parent: Path, older_than_s: float = 3600.0) -> None:
    """Undo what a writer that crashed left behind in `parent`.

    An overwrite moves the old directory aside before the new one takes its name; if the
    writer died between those two renames, the old directory is put back. A staging directory
    whose writer (a process on this host) is dead is removed now; any other temporary
    directory once it is older than `older_than_s`.
    """
    if not parent.is_dir():
        return
    for old in parent.glob(_TMP_PREFIX + "old-*"):
        name = old.name[len(_TMP_PREFIX + "old-") :].rsplit("-", 1)[0]
        if not (parent / name).exists():
            with contextlib.suppress(OSError):
                os.replace(old, parent / name)
    now = time.time()
    for p in parent.glob(_TMP_PREFIX + "*"):
        with contextlib.suppress(OSError):
            if _writer_dead(p) or now - p.stat().st_mtime > older_than_s:
                shutil.rmtree(p, ignore_errors=True)


@contextlib.contextmanager
def atomic_directory(target: Path, overwrite: bool = False, keep_modes: bool = False
                     ) -> Iterator[Path]:
    """Yield a temporary directory beside `target`; on success it becomes `target` in one rename.

    A crash at any point leaves either no `target` or the complete old one, never a partial
    directory. With `overwrite`, an existing `target` is swapped out only after the new one
    is complete. Where the system can exchange two directories atomically (Linux), readers
    never see `target` missing; elsewhere it is missing for the instant between two renames.
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    if target.exists() and not overwrite:
        raise FileExistsError(
            f"{target} already exists; pass overwrite=True (CLI: --overwrite) to replace it"
        )
    for attempt in range(3):
        try:
            tmp = Path(tempfile.mkdtemp(prefix=_staging_prefix(target.name), dir=target.parent))
            break
        except FileNotFoundError:  # another writer removed the (then empty) parent just now
            if attempt == 2:
                raise
            target.parent.mkdir(parents=True, exist_ok=True)
    os.chmod(tmp, 0o755)
    try:
        yield tmp
        mode = default_file_mode()
        for p in tmp.rglob("*"):
            if p.is_dir() and not p.is_symlink():
                os.chmod(p, 0o755)
            elif p.is_file() and not p.is_symlink() and not keep_modes:
                os.chmod(p, mode)
        _fsync_tree(tmp)
        if target.exists() and exchange(tmp, target):
            shutil.rmtree(tmp, ignore_errors=True)  # tmp now holds the old version
        elif target.exists():
            old = target.with_name(f"{_TMP_PREFIX}old-{target.name}-{os.getpid()}")
            os.replace(target, old)
            os.replace(tmp, target)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, target)
        with contextlib.suppress(OSError):
            fd = os.open(target.parent, os.O_RDONLY)
            os.fsync(fd)
            os.close(fd)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def atomic_write_text(path: Path, text: str) -> None:
    """Write a file through a temporary sibling and a rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=_TMP_PREFIX, dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """`atomic_write_text` for bytes: a temporary sibling, fsync, one rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=_TMP_PREFIX, dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, default_file_mode())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
