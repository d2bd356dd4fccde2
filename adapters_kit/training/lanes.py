"""Lanes: a `train_many` run's tasks split into groups that train side by side, one thread each.

One task's small batch does not fill a CPU's cores: torch's threads inside one matrix product
wait on each other (two threads ran the benchmark's steps about 1.4x faster than one, not 2x).
Tasks are independent, so a run can instead give each of `lanes` threads its own share of the
tasks and of the cores (`threads // lanes` torch threads each). Every lane drives its own
passes over the one shared base (its rows routed by a thread-local `Router`), takes its own
steps, evaluations, checkpoints and saves; the base is read, never written, so lanes share it.

What changes with lanes: the dropout draws. Torch has one random generator per process, so
with dropout on, which lane draws first decides each lane's masks and a run is not
repeatable bit for bit; without dropout (or with one lane) it is. The progress events of
every lane reach `on_progress` on the caller's thread (`Relay`), so a callback that writes to
a database connection or a terminal needs no lock.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable, Sequence

import torch

__all__ = ["Relay", "run_lanes", "split"]

log = logging.getLogger("adapters_kit.training")


def split(costs: Sequence[float], lanes: int) -> list[list[int]]:
    """Indices of `costs` in `lanes` groups of near-equal total cost: the costliest first, each
    to the group with the least so far. Groups keep the indices in their given order."""
    groups: list[list[int]] = [[] for _ in range(min(lanes, len(costs)))]
    loads = [0.0] * len(groups)
    for i in sorted(range(len(costs)), key=lambda i: -costs[i]):
        k = loads.index(min(loads))
        groups[k].append(i)
        loads[k] += costs[i]
    return [sorted(g) for g in groups if g]


class Relay:
    """`on_progress` as lanes call it: on the thread that made the relay an event is delivered
    at once, from a lane it waits in a queue until `pump` delivers it there."""

    def __init__(self, on_progress: Callable[[dict], None] | None) -> None:
        self.on_progress = on_progress
        self.owner = threading.get_ident()
        self.waiting: queue.SimpleQueue[dict] = queue.SimpleQueue()

    def __call__(self, event: dict) -> None:
        if self.on_progress is None:
            return
        if threading.get_ident() == self.owner:
            self.on_progress(event)
        else:
            self.waiting.put(event)

    def pump(self, timeout: float | None = None, quiet: bool = False) -> None:
        """Deliver the queued events: wait up to `timeout` seconds for the first, if given.
        `quiet`: an error the callback raises is logged, not raised (the run is ending on
        another error already, which must not be replaced)."""
        try:
            event = self.waiting.get(timeout=timeout) if timeout else self.waiting.get_nowait()
        except queue.Empty:
            return
        while True:
            try:
                self.on_progress(event)
            except Exception:
                if not quiet:
                    raise
                log.debug("progress callback failed on %s while the run stopped", event,
                          exc_info=True)
            try:
                event = self.waiting.get_nowait()
            except queue.Empty:
                return


def run_lanes(groups: Sequence[list], work: Callable[[list, threading.Event], None],
              relay: Relay, threads_per_lane: int) -> None:
    """Run `work(group, halt)` for every group, each in its own thread with `threads_per_lane`
    torch threads, delivering `relay`'s events here meanwhile. When one lane fails (or this
    thread is interrupted) `halt` is set, the others stop after their current step, and the
    first error is raised here once every lane has stopped."""
    halt = threading.Event()
    errors: list[BaseException] = []

    def lane(group: list) -> None:
        try:
            work(group, halt)
        except BaseException as e:  # the first is raised again on the caller's thread
            if errors:
                log.error("a second train_many lane failed too", exc_info=True)
            errors.append(e)
            halt.set()

    previous = torch.get_num_threads()
    torch.set_num_threads(threads_per_lane)  # a new thread takes the count set before it starts
    threads = [threading.Thread(target=lane, args=(g,), name=f"train_many-lane-{k}", daemon=True)
               for k, g in enumerate(groups)]
    failing = True
    try:
        for t in threads:
            t.start()
        while any(t.is_alive() for t in threads):
            relay.pump(timeout=0.1)
        failing = bool(errors)
    except BaseException:  # the callback raised, or Ctrl-C: every lane ends its step, then stops
        halt.set()
        for t in threads:
            t.join()
        raise
    finally:
        try:
            relay.pump(quiet=failing)  # the last events; on failure they cannot hide its error
        finally:
            torch.set_num_threads(previous)
    if errors:
        raise errors[0]
