"""Admin operations on the store and the engine: install or replace, load, unload.

An install copies a verified source directory into the store through `atomic_directory`:
the copy is verified again (checksums, base) before it takes the task's name in one rename,
so a crash (even SIGKILL) at any point leaves the store with the old adapter or the new one,
complete, never a partial one (a remote store: `RemoteStore.publish`, the same promise with
a version key and a pointer). Only then is a resident old version swapped for the new one;
requests running on the old version finish with it.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

from ..adapters.store import CHECKSUMS, read_adapter
from ..engine.cache import AdapterCache
from ..errors import AdapterFileError
from ..files import atomic_directory, recover_directory


def install(cache: AdapterCache, name: str, source: str | Path) -> str:
    """Install the adapter directory `source` as task `name`; return the new digest.

    Raises AdapterFileError (the message names the problem and the fix) before the store
    changes if the source is not a complete adapter for this base: everything a load checks
    (the task card included) is checked first. Only the files checksums.json lists are copied,
    never through a link that leads out of the source, and no file's permissions are widened.
    """
    model, store = cache.model, cache.store
    if "\x00" in str(source):
        raise AdapterFileError("source holds a NUL character; send the path of an adapter "
                               "directory on the server")
    source = Path(source)
    if not source.is_absolute():
        raise AdapterFileError(f"source {str(source)!r} is not an absolute path; send the full "
                               "path of an adapter directory on the server")
    limit = model.max_adapter_bytes()
    files = read_adapter(source, max_weight_bytes=limit)
    model.check(files)
    if getattr(store, "remote", False):
        # an object store: the version uploaded under its own key, then one pointer PUT; every
        # replica polling the pointer swaps to it (RemoteStore.publish)
        digest = store.publish(name, source)
        cache.reload(name)
        return digest
    listed = [*json.loads((source / CHECKSUMS).read_bytes()), CHECKSUMS]
    recover_directory(store.root)
    with atomic_directory(store.path(name), overwrite=True, keep_modes=True) as staged:
        for file_name in listed:
            _copy_inside(source, file_name, staged / file_name)
        copy = read_adapter(staged, max_weight_bytes=limit)  # what takes the name, byte for byte
        if copy.digest != files.digest:
            raise AdapterFileError(f"adapter {source} changed while it was being copied; "
                                   "send it again once it is complete")
        model.check(copy)
    cache.reload(name)
    return files.digest


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
