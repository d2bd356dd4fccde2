"""Admission alone, with no engine: which requests wait, in which order, and which are refused
(429 with Retry-After, 503 when closed, 504 past the deadline), each refusal counted by reason.

The engine's pace is what the runner would have measured; here it is set by hand, so each
decision is checked on its own, without timing.
"""

from __future__ import annotations

import asyncio
import time

import pytest

pytest.importorskip("fastapi")

from adapters_kit.engine.cache import CacheStats  # noqa: E402
from adapters_kit.server.admission import ADMIT_SHARE, Admission  # noqa: E402
from adapters_kit.server.config import ServeConfig  # noqa: E402
from adapters_kit.server.errors import ServeError  # noqa: E402
from adapters_kit.server.metrics import ServerMetrics  # noqa: E402


def admission(tmp_path, tenant_inputs: int | None = None, **settings) -> Admission:
    config = ServeConfig(store=tmp_path, retry_after_s=3, **settings)
    return Admission(config, ServerMetrics(lambda: (CacheStats(), 0)), tenant_inputs)


def count(door: Admission, name: str, **labels) -> float:
    return door.metrics.registry.get_sample_value(name, labels) or 0.0


def submit_all(door: Admission, requests: list[tuple]) -> list:
    """Submit each (tenant, inputs, seconds to the deadline); a future or the ServeError."""
    async def go():
        out = []
        for tenant, inputs, seconds in requests:
            try:
                out.append(door.submit("t", inputs, time.monotonic() + seconds, tenant))
            except ServeError as e:
                out.append(e)
        return out

    return asyncio.run(go())


def test_a_full_queue_refuses_with_429_and_retry_after_and_keeps_what_it_holds(tmp_path):
    door = admission(tmp_path, queue_inputs=4, max_inputs=4)
    first, refused = submit_all(door, [("a", ["x"] * 3, 60), ("a", ["y"] * 2, 60)])
    assert isinstance(first, asyncio.Future)
    assert isinstance(refused, ServeError) and refused.status == 429
    assert refused.code == "overloaded" and refused.headers == {"Retry-After": "3"}
    assert "queue is full (3 inputs waiting, at most 4)" in refused.message
    assert count(door, "adapters_kit_rejected_total", reason="queue_full") == 1
    assert door.pending == 3
    assert door.take(0).inputs == ["x"] * 3 and door.take(0) is None


def test_a_tenant_over_its_share_is_refused_alone(tmp_path):
    door = admission(tmp_path, tenant_inputs=2, queue_inputs=8, max_inputs=2)
    a1, a2, b1 = submit_all(door, [("a", ["x", "x"], 60), ("a", ["x"], 60), ("b", ["y", "y"], 60)])
    assert isinstance(a2, ServeError) and (a2.status, a2.code) == (429, "tenant_overloaded")
    assert isinstance(a1, asyncio.Future) and isinstance(b1, asyncio.Future)
    assert count(door, "adapters_kit_rejected_total", reason="tenant_queue_full") == 1
    assert count(door, "adapters_kit_rejected_total", reason="queue_full") == 0


def test_the_lines_are_taken_in_turn(tmp_path):
    door = admission(tmp_path)
    submit_all(door, [(t, [t], 60) for t in ("a", "a", "a", "b", "a", "b")])
    order = []
    while (job := door.take(0)) is not None:
        order.append(job.tenant)
    assert order == ["a", "b", "a", "b", "a", "a"]
    assert door.pending == 0


def test_a_request_past_its_deadline_in_the_queue_gets_504(tmp_path):
    door = admission(tmp_path, deadline_s=7)
    submit_all(door, [("a", ["late"], 0.001), ("a", ["fine"], 60)])
    time.sleep(0.01)
    late, fine = door.take(0), door.take(0)
    error = door.late(late)
    assert isinstance(error, ServeError) and (error.status, error.code) == (504, "deadline_exceeded")
    assert "deadline of 7 s" in error.message
    assert door.late(fine) is None
    assert count(door, "adapters_kit_deadline_exceeded_total", where="queued") == 1


def test_a_wait_longer_than_its_share_of_the_deadline_is_refused_at_the_door(tmp_path):
    door = admission(tmp_path)
    submit_all(door, [("a", ["x" * 100], 60)])
    door.pace.chars_per_s = 10.0  # 100 characters of tenant a queued: about 10 s of work
    short = 10.0 / ADMIT_SHARE - 1  # a deadline whose share is under those 10 s
    soon, later, other = submit_all(door, [("a", ["y"], short), ("a", ["y"], 60), ("b", ["y"], short)])
    assert isinstance(soon, ServeError) and (soon.status, soon.code) == (429, "overloaded")
    assert soon.headers == {"Retry-After": "3"}
    assert isinstance(later, asyncio.Future)
    # the lines take turns: of a's line only as much runs before b as b has waiting
    assert isinstance(other, asyncio.Future)
    assert count(door, "adapters_kit_rejected_total", reason="deadline_unreachable") == 1


def test_a_batch_that_would_end_past_the_deadline_sheds_the_request_with_429(tmp_path):
    door = admission(tmp_path, deadline_s=10)
    assert not door.cannot_finish(10, 1000, time.monotonic() + 1)  # pace unknown: never shed
    door.pace.tokens_per_s = 100.0
    soon = time.monotonic() + 2
    assert door.cannot_finish(10, 1000, soon)  # 10 s of work ahead, 2 s left
    assert not door.cannot_finish(10, 10, soon)  # 0.125 s with the margin
    # a request too costly for any deadline runs (and gets its 504): it is not shed
    assert not door.cannot_finish(500, 1000, soon)
    error = door.shed()
    assert (error.status, error.code, error.headers) == (429, "overloaded", {"Retry-After": "3"})
    assert count(door, "adapters_kit_rejected_total", reason="deadline_unreachable_at_start") == 1


def test_closed_it_refuses_with_503_and_still_hands_out_what_it_holds(tmp_path):
    door = admission(tmp_path)
    submit_all(door, [("a", ["x"], 60)])
    door.close()
    (refused,) = submit_all(door, [("a", ["y"], 60)])
    assert isinstance(refused, ServeError) and (refused.status, refused.code) == (503, "shutting_down")
    assert door.take(None).inputs == ["x"]
    assert door.take(None) is None  # closed and empty: the engine thread ends


def test_drain_hands_back_every_queued_request_and_closes(tmp_path):
    door = admission(tmp_path)
    submit_all(door, [("a", ["x"], 60), ("b", ["y"], 60), ("a", ["z"], 60)])
    assert sorted(j.inputs[0] for j in door.drain()) == ["x", "y", "z"]
    assert door.closed and door.pending == 0 and door.take(0) is None
    assert door.expected_wait(1) is None
