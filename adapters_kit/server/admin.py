"""Admin operations on the store and the engine: install or replace, load, unload.

An install publishes a verified source directory into the store (`AdapterStore.publish`): a
folder store copies it, verifies the copy is the same version, and renames it into the task's
name; a remote store uploads it under its version key and then PUTs the pointer. A crash
(even SIGKILL) at any point leaves the store with the old adapter or the new one, complete,
never a partial one. Only then is a resident old version swapped for the new one;
requests running on the old version finish with it.
"""

from __future__ import annotations

from pathlib import Path

from ..adapters.store import read_adapter
from ..engine.cache import AdapterCache
from ..errors import AdapterFileError


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
    # the store takes exactly the files checked (their digest), in one atomic step: a folder's
    # rename, or an object store's pointer PUT that every polling replica swaps to
    store.publish(name, source, digest=files.digest)
    cache.reload(name)
    return files.digest

