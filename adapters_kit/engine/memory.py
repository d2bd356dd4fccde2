"""Giving freed heap memory back to the system, for a process that runs batches for days.

Batches of changing shapes free and allocate tensors of every size; glibc keeps the freed
pages in its heap, so a server's RSS climbs with the variety of batches it has seen (on this
project's soak, 0.7 to 1.4 GB in ten minutes) though nothing leaks. `malloc_trim` returns
them; called between batches at most every `every_s` seconds, it kept an engine flat (519 to
527 MB over 350 mixed batches, against 540 to 823 MB without) at no measurable cost.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import time


def _malloc_trim():
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        return libc.malloc_trim
    except (OSError, AttributeError):  # not glibc (macOS, musl): nothing to do
        return None


class HeapTrimmer:
    """Call `maybe()` between batches: trims the heap when `every_s` seconds have passed."""

    def __init__(self, every_s: float = 1.0) -> None:
        self.every_s = every_s
        self._trim = _malloc_trim()
        self._last = time.monotonic()

    def maybe(self) -> bool:
        now = time.monotonic()
        if self._trim is None or now - self._last < self.every_s:
            return False
        self._trim(0)
        self._last = time.monotonic()
        return True
