"""Adapter files and the stores that hold them, in layers that import one way:

    store      the adapter directory format: writing it atomically, reading it back verified
    meta       the metadata checks the format runs; blobcache: verified versions by digest
    local      LocalStore, a folder of adapter directories
    remote     RemoteStore, versions and pointers at an fsspec URL (s3://, gs://, file://)
    door       the AdapterStore protocol, and open_store: a URL, a path or a store -> the store
    portable   the base an adapter names, resolved on any machine; merge: export into the base

Nothing here imports the engine, the server or training."""

from .door import AdapterStore, load_adapter, open_store, save_adapter_files, store_location
from .local import LocalStore
from .remote import RemoteStore

__all__ = ["AdapterStore", "LocalStore", "RemoteStore", "load_adapter", "open_store",
           "save_adapter_files", "store_location"]
