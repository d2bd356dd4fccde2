"""Quiet transformers and datasets for the calls that load with them, and only then.

Their log levels and progress bars are process-wide settings that belong to the user: these
context managers (usable as decorators) set them for the duration of a call and put back what
they found. Calls may overlap across threads: the first to enter saves, the last to leave restores.
"""

from __future__ import annotations

import contextlib
import threading

_lock = threading.Lock()
_depth: dict[str, int] = {}
_saved: dict[str, object] = {}


@contextlib.contextmanager
def _scoped(library: str, save, quiet, restore):
    with _lock:
        if not _depth.get(library):
            _saved[library] = save()
            quiet()
        _depth[library] = _depth.get(library, 0) + 1
    try:
        yield
    finally:
        with _lock:
            _depth[library] -= 1
            if not _depth[library]:
                restore(_saved.pop(library))


@contextlib.contextmanager
def quiet_transformers():
    """transformers logs errors only and shows no progress bars inside the block."""
    from transformers.utils import logging as hf

    def restore(saved):
        hf.set_verbosity(saved[0])
        (hf.enable_progress_bar if saved[1] else hf.disable_progress_bar)()

    def quiet():
        hf.set_verbosity_error()
        hf.disable_progress_bar()

    with _scoped("transformers", lambda: (hf.get_verbosity(), hf.is_progress_bar_enabled()),
                 quiet, restore):
        yield


@contextlib.contextmanager
def quiet_datasets():
    """datasets shows no progress bars inside the block (its log level is left alone)."""
    import datasets

    def restore(enabled):
        (datasets.enable_progress_bars if enabled else datasets.disable_progress_bars)()

    with _scoped("datasets", datasets.is_progress_bar_enabled, datasets.disable_progress_bars,
                 restore):
        yield
