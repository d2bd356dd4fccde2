"""The heap trimmer the engine thread calls between batches."""

from __future__ import annotations

import sys

import pytest

from adapters_kit.engine.memory import HeapTrimmer


def test_it_trims_at_most_once_per_interval():
    trimmer = HeapTrimmer(every_s=3600)
    assert trimmer.maybe() is False  # the interval has not passed
    if sys.platform != "linux":
        pytest.skip("malloc_trim is glibc's")
    trimmer.every_s = 0
    assert trimmer.maybe() is True
