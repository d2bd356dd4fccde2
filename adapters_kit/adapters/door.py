"""The one door to stores: what every store offers (`AdapterStore`), and opening the right one
for a location.

    store = open_store("adapters")                        # a LocalStore (a folder)
    store = open_store("s3://bucket/adapters")            # a RemoteStore (any fsspec URL)
    files = load_adapter("s3://bucket/adapters/sst2")     # one adapter: a folder or STORE_URL/TASK

This is the only place that tells a URL from a path: everything else opens a store here (or
asks `store_location`, or asks an open store whether it is `remote`).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
from pathlib import Path
from typing import Protocol, runtime_checkable

from ..errors import AdapterFileError
from ..files import atomic_directory
from ..tasks import is_served_name
from .local import LocalStore
from .remote import RemoteStore
from .store import CHECKSUMS, AdapterFiles, read_adapter

_URL = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*)://")
_HALF_URL = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]+:/(?!/)")  # `s3:/bucket`: a slash short


class _ProtocolOnly(type(Protocol)):
    def __call__(cls, *args, **kwargs):
        if cls is AdapterStore:  # what `AdapterStore(path)` was before the door
            raise TypeError("AdapterStore is the protocol every store satisfies, not a store to "
                            f"build; open one with open_store({args[0] if args else 'location'!r})"
                            " (a folder path or a URL such as s3://bucket/prefix), or LocalStore(path)")
        return super().__call__(*args, **kwargs)


@runtime_checkable
class AdapterStore(Protocol, metaclass=_ProtocolOnly):
    """What every store offers: a folder (`LocalStore`) or an object store (`RemoteStore`)."""

    remote: bool
    """False for a local folder; True for an object store (versions under pointers)."""

    @property
    def root(self) -> str | Path:
        """Where the store is: its folder, or its URL (what messages name)."""

    def names(self) -> list[str]:
        """The adapters the store holds, sorted."""

    def has(self, name: str) -> bool:
        """True if the store holds a complete adapter `name`."""

    def exists(self, name: str) -> bool:
        """True if anything, complete or not, sits under `name`."""

    def info(self, name: str) -> dict:
        """The adapter's task.json, unverified (for listings); OSError/ValueError if unreadable."""

    def read(self, name: str, max_weight_bytes: int | None = None) -> AdapterFiles:
        """The adapter `name`, verified; AdapterFileError naming it and the fix if refused."""

    def publish(self, name: str, source: str | Path, digest: str | None = None) -> str:
        """Make the adapter directory `source` the store's `name`, atomically; its digest.
        `digest`: the version the caller verified, refused if `source` holds another by now."""

    def recover(self) -> None:
        """Undo what a writer killed mid-write left behind (where anything can be left)."""


def store_location(location: str | os.PathLike) -> str | Path:
    """`location` as the door reads it: a URL (`scheme://...`) stays a string, anything else is
    a folder `Path`. Refuses what is neither, naming it and the fix."""
    if isinstance(location, str):
        if _URL.match(location):
            return location
        if _HALF_URL.match(location):
            raise AdapterFileError(f"store location {location!r} looks like a URL with one slash "
                                   "after the scheme; write scheme://... (e.g. s3://bucket/prefix)")
        if not location.strip():
            raise AdapterFileError("store location is empty; give a folder path or a store URL "
                                   "such as s3://bucket/prefix")
        return Path(location)
    if isinstance(location, os.PathLike):
        return Path(location)
    raise TypeError(f"store location {location!r} is a {type(location).__name__}; give a folder "
                    "path (str or Path) or a store URL such as s3://bucket/prefix")


def open_store(location: str | os.PathLike | AdapterStore, **options) -> AdapterStore:
    """The store at `location`: a `RemoteStore` for a URL (`options` as for it: storage_options,
    cache_dir, cache_bytes, pointer_ttl_s), a `LocalStore` for a folder path, an open store
    itself."""
    if isinstance(location, AdapterStore):
        if options:
            raise TypeError(f"options {sorted(options)} given with a store already open "
                            f"({location.root}); pass them when opening it")
        return location
    where = store_location(location)
    if isinstance(where, Path):
        if options:
            raise TypeError(f"options {sorted(options)} are a remote store's; {where} is a folder "
                            "store, which takes none (give a URL such as s3://bucket/prefix for one)")
        if where.exists() and not where.is_dir():
            raise AdapterFileError(f"store {where} is a file; a store is a folder of adapter "
                                   "directories (or a URL such as s3://bucket/prefix)")
        return LocalStore(where)
    return _remote(where, options)


def _remote(url: str, options: dict) -> RemoteStore:
    from fsspec.registry import known_implementations, registry

    scheme = _URL.match(url).group(1)
    if scheme not in known_implementations and scheme not in registry:
        raise AdapterFileError(f"store {url!r}: no fsspec file system serves {scheme}://; give a "
                               "folder path, or a URL such as s3://bucket/prefix, gs://bucket/"
                               "prefix or file:///abs/path")
    if not url[len(scheme) + 3:].strip("/"):
        raise AdapterFileError(f"store {url!r} names no bucket or folder; give e.g. "
                               f"{scheme}://bucket/prefix")
    try:
        return RemoteStore(url, **options)
    except ImportError as e:  # fsspec's message names the package (e.g. "Install s3fs ...")
        raise AdapterFileError(f"store {url!r} needs the {scheme}:// backend, which is not "
                               f"installed ({e}); pip install it (for S3: pip install "
                               "'adapters-kit[s3]')") from None


def split_url(url: str) -> tuple[str, str]:
    """`s3://bucket/prefix/task` -> (`s3://bucket/prefix`, `task`): an adapter's store and name."""
    store, _, name = url.rstrip("/").rpartition("/")
    if not _URL.match(url) or not is_served_name(name) or store.endswith(":/") or store.endswith(":"):
        raise AdapterFileError(f"{url!r} does not end in a task name; give STORE_URL/TASK, e.g. "
                               "s3://bucket/adapters/sst2")
    return store, name


def load_adapter(location: str | os.PathLike, max_weight_bytes: int | None = None,
                 **store_options) -> AdapterFiles:
    """An adapter, verified, from a local directory or a store URL (`s3://bucket/prefix/task`)."""
    where = store_location(location)
    if isinstance(where, Path):
        return read_adapter(where, max_weight_bytes=max_weight_bytes)
    store_url, name = split_url(where)
    return open_store(store_url, **store_options).read(name, max_weight_bytes)


def save_adapter_files(files: AdapterFiles, location: str | os.PathLike, overwrite: bool = False,
                       **store_options) -> str:
    """Write an adapter's verified files to a local directory or publish them at a store URL
    (STORE_URL/TASK); returns where they are (the URL, or the directory)."""
    where = store_location(location)
    if isinstance(where, Path):
        again = read_adapter(files.path)  # the folder still holds exactly what was verified
        if again.digest != files.digest:
            raise AdapterFileError(f"adapter {files.path} changed since it was read; read it again")
        listed = [*json.loads((files.path / CHECKSUMS).read_bytes()), CHECKSUMS]
        with atomic_directory(where, overwrite=overwrite) as tmp:
            for name in listed:
                shutil.copyfile(files.path / name, tmp / name)
        return str(location)
    store_url, name = split_url(where)
    store = open_store(store_url, **store_options)
    if not overwrite and store.has(name):
        raise FileExistsError(f"{location} already exists; pass overwrite=True (CLI: "
                              "--overwrite) to publish a new version")
    store.publish(name, files.path, digest=files.digest)
    return where


def staging_for(location: str | os.PathLike, task: str, overwrite: bool = False) -> Path | None:
    """The local folder that `train --out STORE_URL/NAME` writes before publishing there; None
    for a folder path (training writes the folder itself). Refuses at once, before any
    training, if the URL's adapter exists and not `overwrite`. The same URL gets the same
    folder, so an interrupted run resumes."""
    from ..backbones.embedded import cache_root

    url = store_location(location)
    if isinstance(url, Path):
        return None
    store_url, name = split_url(url)
    if not overwrite and open_store(store_url).has(name):
        raise FileExistsError(f"{url} already exists; pass --overwrite (TrainConfig(overwrite="
                              "True)) to publish a new version")
    folder = cache_root() / "publish" / hashlib.sha256(url.encode()).hexdigest()[:16] / name
    if folder.is_dir():  # a finished run's copy that was not published: trained again
        shutil.rmtree(folder)
    return folder


def publish_staged(folder: Path, url: str) -> str:
    """Publish a staged adapter folder to `url` (STORE_URL/NAME); remove the folder; its digest."""
    store_url, name = split_url(url)
    digest = open_store(store_url).publish(name, folder)
    shutil.rmtree(folder, ignore_errors=True)
    return digest
