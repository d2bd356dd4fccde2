"""An adapter store at an fsspec URL (`s3://bucket/prefix`, `gs://...`, `file://...`) that many
machines serve from.

Layout under the URL, per task:

    NAME/versions/DIGEST/adapter_config.json ...   one version's files, never changed once written
    NAME/CURRENT                                   a small JSON pointer naming the served version

DIGEST is the sha256 of the version's checksums.json (which holds the sha256 of every other
file), so a version's key names its content. Object stores have no rename; a publish uploads
the version under its own key first and then replaces the pointer with one single-object PUT,
which is atomic: a reader follows the pointer to the old version or to the new one, complete.
A publisher killed at any point leaves the old version current (at worst an unreferenced
version, which `gc` removes after its grace period). Two publishers at once each upload their
own version; the last pointer written wins, and it names a complete version.

Reads go through a local content-addressed cache (`BlobCache`), and every file is verified by
its checksum before use: a corrupt, truncated or foreign object is refused with its key named
(an `AdapterFileError`: the task fails alone, the others keep serving).

Credentials and endpoints are fsspec's (for S3, s3fs: the AWS_* variables, or fsspec's
configuration, e.g. FSSPEC_S3_ENDPOINT_URL), or `storage_options` passed here.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import socket
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

from ..errors import AdapterFileError
from ..files import atomic_write_bytes
from ..tasks import is_served_name
from . import meta
from .blobcache import BlobCache
from .store import CHECKSUMS, TASK, AdapterFiles, check_name, read_adapter

POINTER = "CURRENT"
VERSIONS = "versions"
POINTER_FORMAT = 1
RETIRED_MEMORY_S = 7 * 86400.0
"""How long a pointer remembers when each old version stopped being current (for `gc`)."""
DEFAULT_GRACE_S = 3600.0


@dataclass
class Pointer:
    """A task's CURRENT object."""

    version: str
    published_at: float
    retired: dict[str, float]
    """Older versions -> when they stopped being current (what `gc`'s grace period counts from)."""

    @classmethod
    def parse(cls, data: bytes, where: str) -> Pointer:
        try:
            doc = json.loads(data)
            version = doc["version"]
            if not isinstance(version, str) or not re.fullmatch(r"[0-9a-f]{64}", version):
                raise ValueError(f"version {version!r} is not a sha256 digest")
            retired = {str(k): float(v) for k, v in (doc.get("retired") or {}).items()}
            return cls(version, float(doc.get("published_at", 0.0)), retired)
        except (ValueError, KeyError, TypeError, AttributeError) as e:
            raise AdapterFileError(f"pointer {where} refused: it is not a pointer this store "
                                   f"wrote ({type(e).__name__}: {e}); publish the adapter again") from None


class RemoteStore:
    """Adapter directories at an fsspec URL, read through a local verified cache.

    `open_store("s3://...")` opens one (`root`: any URL fsspec takes). `pointer_ttl_s`: how
    long a pointer read is trusted before it is fetched again (the serving processes' watcher
    refreshes those of resident tasks every poll); `cache_dir`/`cache_bytes`: the local cache
    and its bound.
    """

    remote: ClassVar[bool] = True

    def __init__(self, root: str, storage_options: dict | None = None,
                 cache_dir: str | Path | None = None, cache_bytes: int = 2 << 30,
                 pointer_ttl_s: float = 2.0) -> None:
        from fsspec.core import url_to_fs

        from ..backbones.embedded import cache_root

        self.root = root.rstrip("/")
        self.url = self.root
        self.fs, self._base = url_to_fs(self.root, **(storage_options or {}))
        self._local = "file" in (self.fs.protocol if isinstance(self.fs.protocol, tuple)
                                 else (self.fs.protocol,))
        self.cache = BlobCache(Path(cache_dir) if cache_dir else cache_root() / "objects", cache_bytes)
        self.pointer_ttl_s = pointer_ttl_s
        self._pointers: dict[str, tuple[Pointer | None, float]] = {}  # name -> (pointer, fetched)
        self._task_json: dict[str, dict] = {}  # version -> its task.json (immutable)
        self._lock = threading.Lock()
        self.checkpoints = cache_root() / "checkpoints"

    # -- keys -----------------------------------------------------------------------------------

    def _key(self, *parts: str) -> str:
        return "/".join([self._base.rstrip("/"), *parts])

    def key_url(self, *parts: str) -> str:
        """A key as a URL, as messages name it."""
        return "/".join([self.url, *parts])

    # -- the AdapterStore protocol ----------------------------------------------------------------

    def path(self, name: str):  # a remote adapter has no local path until it is read
        raise AdapterFileError(f"store {self.url} is remote: use read(name) (files are fetched "
                               "into the local cache, verified)")

    def recover(self) -> None:
        """Nothing to put back: a killed publisher leaves at worst an unreferenced version."""

    def names(self) -> list[str]:
        """Tasks that have a pointer."""
        base = self._base.rstrip("/")
        self.fs.invalidate_cache(base)
        try:
            found = self.fs.glob(f"{base}/*/{POINTER}")
        except FileNotFoundError:
            return []
        return sorted(n for n in (p.rstrip("/").split("/")[-2] for p in found) if is_served_name(n))

    def has(self, name: str) -> bool:
        return is_served_name(name) and self.pointer(name) is not None

    exists = has

    def info(self, name: str) -> dict:
        """The current version's task.json, unverified (for listings); OSError/ValueError if
        unreadable."""
        pointer = self.pointer(name)
        if pointer is None:
            raise FileNotFoundError(f"no adapter {name!r} in store {self.url}")
        cached = self._task_json.get(pointer.version)
        if cached is None:
            data = self.fs.cat_file(self._key(name, VERSIONS, pointer.version, TASK))
            if len(data) > meta.MAX_METADATA_BYTES:
                raise ValueError(f"{self.key_url(name, VERSIONS, pointer.version, TASK)} is over "
                                 f"{meta.MAX_METADATA_BYTES} bytes")
            cached = self._task_json[pointer.version] = json.loads(data)
        return cached

    def read(self, name: str, max_weight_bytes: int | None = None) -> AdapterFiles:
        """The current version of `name`, fetched into the cache if needed, verified."""
        check_name(name)
        pointer = self.pointer(name)
        if pointer is None:
            known = ", ".join(self.names()) or "none"
            raise AdapterFileError(f"no adapter {name!r} in store {self.url}; it holds: {known}")
        try:
            return self.read_version(name, pointer.version, max_weight_bytes)
        except FileNotFoundError:
            # the version went away under a stale pointer (a newer one was published, the old
            # collected): follow the pointer as it is now, once
            fresh = self.pointer(name, fresh=True)
            if fresh is None or fresh.version == pointer.version:
                raise AdapterFileError(f"adapter {self.key_url(name, VERSIONS, pointer.version)} "
                                       "refused: its files are missing; publish it again") from None
            return self.read_version(name, fresh.version, max_weight_bytes)

    # -- pointers -------------------------------------------------------------------------------

    def pointer(self, name: str, fresh: bool = False) -> Pointer | None:
        """The task's pointer (None: no such task), from memory if read within `pointer_ttl_s`."""
        now = time.monotonic()
        with self._lock:
            known = self._pointers.get(name)
        if known is not None and not fresh and now - known[1] < self.pointer_ttl_s:
            return known[0]
        return self.pointers([name])[name]

    def pointers(self, names: list[str]) -> dict[str, Pointer | None]:
        """Fetch the pointers of `names` now, in one batch of concurrent GETs."""
        keys = {self._key(check_name(n), POINTER): n for n in names}
        started = time.monotonic()
        got = self.fs.cat(list(keys), on_error="return") if keys else {}
        out: dict[str, Pointer | None] = {}
        for key, name in keys.items():
            data = got.get(key)
            if data is None or isinstance(data, FileNotFoundError):
                out[name] = None
            elif isinstance(data, BaseException):
                raise OSError(f"cannot read pointer {self.key_url(name, POINTER)}: {data}")
            else:
                out[name] = Pointer.parse(data, self.key_url(name, POINTER))
        with self._lock:
            for name, p in out.items():
                self._pointers[name] = (p, started)
        return out

    def refresh(self, name: str) -> Pointer | None:
        return self.pointer(name, fresh=True)

    # -- reading one version --------------------------------------------------------------------

    def read_version(self, name: str, version: str, max_weight_bytes: int | None = None) -> AdapterFiles:
        """Version `version` of `name`, verified; from the cache, else fetched into it."""
        where = self.key_url(name, VERSIONS, version)
        folder = self.cache.get(version)
        if folder is not None:
            try:
                return self._verified(folder, version, where, max_weight_bytes)
            except (AdapterFileError, OSError):
                self.cache.discard(version)  # damaged on this disk: fetch it again
        files = self._fetch(name, version, max_weight_bytes)
        folder = self.cache.put(version, files)
        return self._verified(folder, version, where, max_weight_bytes)

    def _verified(self, folder: Path, version: str, where: str, max_weight_bytes) -> AdapterFiles:
        try:
            files = read_adapter(folder, max_weight_bytes=max_weight_bytes)
        except AdapterFileError as e:
            raise AdapterFileError(str(e).replace(str(folder), where)) from None
        if files.digest != version:
            raise AdapterFileError(f"adapter {where} refused: its checksums.json does not hash to "
                                   "its version key (a foreign object); publish it again")
        files.source = where
        return files

    def _fetch(self, name: str, version: str, max_weight_bytes: int | None) -> dict[str, bytes]:
        """Every file of the version, each verified against checksums.json, which is verified
        against the version key. Sizes are checked from the listing before any download."""
        prefix = self._key(name, VERSIONS, version)
        where = self.key_url(name, VERSIONS, version)
        self.fs.invalidate_cache(prefix)
        listing = {p["name"].rstrip("/").rsplit("/", 1)[-1]: int(p.get("size") or 0)
                   for p in self.fs.ls(prefix, detail=True) if p.get("type") != "directory"}
        if CHECKSUMS not in listing:
            raise FileNotFoundError(f"{where}/{CHECKSUMS}")
        limit = meta.MAX_METADATA_BYTES
        weights_limit = None if max_weight_bytes is None else max_weight_bytes + limit
        for fname, size in listing.items():
            cap = weights_limit if fname.endswith(".safetensors") else limit * 64
            if cap is not None and size > cap:
                raise AdapterFileError(f"adapter {where} refused: {fname} is {size:,} bytes, more than "
                                       f"an adapter for this base can hold ({cap:,}); it is not "
                                       "this base's adapter. Nothing was loaded from it")
        # everything listed in one batch of concurrent GETs (the listing gave the names), then
        # checked: checksums.json against the version key, every other file against it
        wanted = [f for f in listing if is_served_name(f)]
        got = self.fs.cat([f"{prefix}/{f}" for f in wanted], on_error="return")
        blobs = {f: got.get(f"{prefix}/{f}") for f in wanted}
        sums_data = blobs.get(CHECKSUMS)
        if not isinstance(sums_data, bytes):
            raise FileNotFoundError(f"{where}/{CHECKSUMS}")
        if hashlib.sha256(sums_data).hexdigest() != version:
            raise AdapterFileError(f"object {where}/{CHECKSUMS} refused: it does not hash to its "
                                   "version key (corrupt or foreign); publish the adapter again")
        try:
            sums = json.loads(sums_data)
        except ValueError as e:
            raise AdapterFileError(f"object {where}/{CHECKSUMS} is not valid JSON ({e})") from None
        problems = meta.checksum_problems(sums)
        if problems:
            raise AdapterFileError(f"adapter {where} refused: {'; '.join(problems)}")
        out = {CHECKSUMS: sums_data}
        for fname in sums:  # objects checksums.json does not name are not this version's
            data = blobs.get(fname)
            if data is None or isinstance(data, FileNotFoundError):
                raise FileNotFoundError(f"{where}/{fname}")
            if isinstance(data, BaseException):
                raise OSError(f"cannot read {where}/{fname}: {data}")
            if hashlib.sha256(data).hexdigest() != sums[fname]:
                raise AdapterFileError(f"object {where}/{fname} refused: checksum mismatch (the "
                                       "object is corrupt, truncated or foreign); publish the "
                                       "adapter again. Nothing was loaded from it")
            out[fname] = data
        return out

    # -- publishing -----------------------------------------------------------------------------

    def upload_version(self, name: str, source: str | Path, digest: str | None = None) -> str:
        """Upload a verified adapter directory as an immutable version of `name`; its digest.

        The bytes uploaded are the bytes checked: each file is read once, hashed against
        checksums.json, then sent. Never changes what any reader sees (see `set_current`).
        `digest`: the version the caller verified (`AdapterFiles.digest`); refused, nothing
        uploaded, if `source` holds another by now. Without it `source` is verified here."""
        check_name(name)
        source = Path(source)
        expected = digest or read_adapter(source).digest  # verified, as a load verifies it
        sums_data = (source / CHECKSUMS).read_bytes()
        digest = hashlib.sha256(sums_data).hexdigest()
        if digest != expected:
            raise AdapterFileError(f"adapter {source} changed while it was being published; "
                                   "publish it again once it is complete")
        sums = json.loads(sums_data)
        blobs = {}
        real_root = os.path.realpath(source)
        for fname, expected in sums.items():
            real = os.path.realpath(source / fname)
            if os.path.commonpath([real_root, real]) != real_root:
                raise AdapterFileError(f"adapter {source} refused: {fname} is a link to a file "
                                       "outside the adapter directory; copy the real files into it")
            with open(real, "rb") as f:
                data = f.read()
            if hashlib.sha256(data).hexdigest() != expected:
                raise AdapterFileError(f"adapter {source} changed while it was being published "
                                       f"({fname}); publish it again once it is complete")
            blobs[self._key(name, VERSIONS, digest, fname)] = data
        self._put_many(blobs)
        # checksums.json last: a version prefix without it is an upload that did not finish
        self._put_many({self._key(name, VERSIONS, digest, CHECKSUMS): sums_data})
        return digest

    def set_current(self, name: str, version: str) -> Pointer:
        """Point `name` at an uploaded version: one single-object PUT, atomic."""
        check_name(name)
        if not self.fs.exists(self._key(name, VERSIONS, version, CHECKSUMS)):
            raise AdapterFileError(f"version {self.key_url(name, VERSIONS, version)} is not uploaded "
                                   "(no checksums.json); upload it before pointing at it")
        now = time.time()
        old = self.pointer(name, fresh=True)
        retired = {} if old is None else {v: t for v, t in old.retired.items()
                                          if now - t < RETIRED_MEMORY_S and v != version}
        if old is not None and old.version != version:
            retired[old.version] = now
        doc = {"format": POINTER_FORMAT, "name": name, "version": version, "published_at": now,
               "published": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(now)),
               "publisher": f"{socket.gethostname()}:{os.getpid()}", "retired": retired}
        self._put_many({self._key(name, POINTER): json.dumps(doc, indent=1).encode()})
        pointer = Pointer(version, now, retired)
        with self._lock:
            self._pointers[name] = (pointer, time.monotonic())
        return pointer

    def publish(self, name: str, source: str | Path, digest: str | None = None) -> str:
        """Upload `source` as a new version of `name`, then make it current; its digest.
        `digest`: as for `upload_version`."""
        digest = self.upload_version(name, source, digest)
        self.set_current(name, digest)
        return digest

    def _put_many(self, blobs: dict[str, bytes]) -> None:
        if self._local:  # a local file system: write each through a temporary and a rename
            for key, data in blobs.items():
                atomic_write_bytes(Path(key), data)
            return
        self.fs.pipe(blobs)

    # -- garbage collection ---------------------------------------------------------------------

    def versions(self, name: str) -> list[str]:
        prefix = self._key(check_name(name), VERSIONS)
        self.fs.invalidate_cache(prefix)
        try:
            entries = self.fs.ls(prefix, detail=False)
        except FileNotFoundError:
            return []
        return sorted(e.rstrip("/").rsplit("/", 1)[-1] for e in entries)

    def gc(self, name: str, grace_s: float = DEFAULT_GRACE_S) -> list[str]:
        """Delete versions of `name` that stopped being current more than `grace_s` ago (and
        uploads never made current, once older than `grace_s`); the current one never.

        A replica reads a version only after reading a pointer that named it, so a grace
        longer than the replicas' poll interval plus the longest load keeps every version a
        replica may still be reading. Returns the versions deleted."""
        if grace_s < 0:
            raise ValueError(f"grace_s must be >= 0, got {grace_s}")
        pointer = self.pointer(name, fresh=True)
        now = time.time()
        gone = []
        for version in self.versions(name):
            if pointer is not None and version == pointer.version:
                continue
            since = pointer.retired.get(version) if pointer is not None else None
            if since is None:  # never current (or forgotten): its own age counts
                since = self._uploaded_at(name, version)
            if since is not None and now - since <= grace_s:
                continue
            self.fs.rm(self._key(name, VERSIONS, version), recursive=True)
            gone.append(version)
        return gone

    def _uploaded_at(self, name: str, version: str) -> float | None:
        newest = None
        for entry in self.fs.ls(self._key(name, VERSIONS, version), detail=True):
            t = entry.get("LastModified") or entry.get("mtime") or entry.get("created")
            if hasattr(t, "timestamp"):
                t = t.timestamp()
            if isinstance(t, (int, float)):
                newest = t if newest is None else max(newest, t)
        return newest
