"""Wait ages, Go-style: how long each task has been sitting where it is.

A goroutine dump says ``[chan receive, 11 minutes]``. asyncio keeps no such
time, so the watchdog samples, at a low rate, the future each task waits on
(``Task._fut_waiter``). A task whose waiter is the *same object* at the next
sample has waited on it the whole time in between (a task cannot leave a
wait and come back to the same unfinished future without completing it), so
``now - first_seen`` is a lower bound of its wait: dumps say ``waiting ≥ 41 s``.

Identity is kept with a weak reference, not ``id()``: a loop of
``await asyncio.sleep(1)`` creates a new future per turn, and CPython often
gives it the address of the previous one. No future or task is kept alive.

Cost: one pass over the loop's tasks, a few attribute reads and (mostly
reused) weak references per task, on the watchdog thread holding the GIL.
It is bounded by a duty cycle: after a sample that took ``c`` seconds the
next one waits at least ``c / MAX_DUTY``, so sampling never takes more than
``MAX_DUTY`` of one core however many tasks there are (a pass longer than the
GIL switch interval also hands the GIL to the loop thread every 5 ms).
"""

from __future__ import annotations

import asyncio
import time
import weakref
from collections.abc import Callable
from typing import Any

from .tasks import all_tasks

SAMPLE_EVERY = 1.0
"""Seconds between two samples when sampling is cheap."""
MAX_DUTY = 0.02
"""Largest share of wall time the sampler may use (2 %)."""

_Ref = Callable[[], Any]


class WaitSampler:
    """Per loop: task id -> (reference to its waiter, monotonic time first seen there).

    Written and read only by the watchdog thread (sample at ticks, ages at
    capture), so it needs no lock.
    """

    __slots__ = ("last_cost", "samples", "table", "tasks_seen")

    def __init__(self) -> None:
        self.table: dict[int, tuple[_Ref, float]] = {}
        self.samples = 0
        self.last_cost = 0.0
        self.tasks_seen = 0

    def sample(self, loop: asyncio.AbstractEventLoop, now: float) -> float:
        """Record where every task of ``loop`` waits; return seconds until the next sample."""
        t0 = time.perf_counter()
        self.sample_tasks(all_tasks(loop), now)
        self.last_cost = cost = time.perf_counter() - t0
        return max(SAMPLE_EVERY, cost / MAX_DUTY)

    def sample_tasks(self, tasks: list[asyncio.Task[Any]], now: float) -> None:
        # The hot loop of the sampler: locals only, no calls but the weakref's.
        get = self.table.get
        ref = weakref.ref
        new: dict[int, tuple[_Ref, float]] = {}
        for task in tasks:
            try:
                waiter = task._fut_waiter  # type: ignore[attr-defined]
            except AttributeError:  # not an asyncio.Task (a foreign task type)
                continue
            if waiter is None:  # running or ready to run: not waiting anywhere
                continue
            key = id(task)
            prev = get(key)
            if prev is not None and prev[0]() is waiter:
                new[key] = prev
            else:
                try:  # noqa: SIM105 (a with-statement costs more in this hot loop)
                    new[key] = (ref(waiter), now)  # CPython reuses an existing plain ref
                except TypeError:  # an awaitable without weakref support: age unknown
                    pass
        # One store: capture (same thread) always sees a whole table.
        self.table = new
        self.samples += 1
        self.tasks_seen = len(tasks)

    def age_of(self, now: float) -> Callable[[asyncio.Task[Any]], float | None]:
        """A function: task -> seconds it has at least waited where it is now (None: unknown)."""
        table = self.table

        def age(task: asyncio.Task[Any]) -> float | None:
            entry = table.get(id(task))
            if entry is None:
                return None
            waiter = getattr(task, "_fut_waiter", None)
            if waiter is None or entry[0]() is not waiter:
                return None  # moved since the last sample
            return max(0.0, now - entry[1])

        return age
