"""Admin operations on the store and the engine: install or replace, load, unload.

An install copies a verified source directory into the store through `atomic_directory`:
the copy is verified again (checksums, base) before it takes the task's name in one rename,
so a crash (even SIGKILL) at any point leaves the store with the old adapter or the new one,
complete, never a partial one. Only then is a resident old version swapped for the new one;
requests running on the old version finish with it.
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path

from ..cache import AdapterCache
from ..errors import AdapterFileError
from ..fsutil import atomic_directory, recover_directory
from ..store import check_against_base, read_adapter

NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.\-]{0,127}")


def valid_name(name: str) -> bool:
    """A task name that is safe as a directory name in the store (no paths, no hidden files)."""
    return NAME.fullmatch(name) is not None and ".." not in name


def install(cache: AdapterCache, name: str, source: str | Path) -> str:
    """Install the adapter directory `source` as task `name`; return the new digest.

    Raises AdapterFileError (the message names the problem and the fix) before the store
    changes if the source is not a complete adapter for this base.
    """
    model, store = cache.model, cache.store
    if "\x00" in str(source):
        raise AdapterFileError("source holds a NUL character; send the path of an adapter "
                               "directory on the server")
    source = Path(source)
    if not source.is_absolute():
        raise AdapterFileError(f"source {str(source)!r} is not an absolute path; send the full "
                               "path of an adapter directory on the server")
    files = read_adapter(source)
    check_against_base(files, model.model, model.fingerprint)
    recover_directory(store.root)
    with atomic_directory(store.path(name), overwrite=True) as staged:
        for f in sorted(source.iterdir()):
            if f.is_file():
                shutil.copyfile(f, staged / f.name)
        copy = read_adapter(staged)  # what will take the name, verified byte for byte
        if copy.digest != files.digest:
            raise AdapterFileError(f"adapter {source} changed while it was being copied; "
                                   "send it again once it is complete")
        check_against_base(copy, model.model, model.fingerprint)
    cache.reload(name)
    return files.digest
