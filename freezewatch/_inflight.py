"""Units of work in flight: watch() sections and framework requests.

Written on the loop thread (enter/exit), read by the watchdog thread. The
table is a plain dict: a single ``d[k] = v`` or ``d.pop(k)`` is atomic under
the GIL, so the loop thread never takes a lock on a request's path, and the
watchdog copies it with ``list(d.values())`` retried on the RuntimeError a
concurrent resize can raise.
"""

from __future__ import annotations

import asyncio
import functools
import time
from collections.abc import Awaitable, Callable
from types import TracebackType
from typing import Any, TypeVar

from . import _state
from ._snapshot.model import InflightUnit

F = TypeVar("F", bound=Callable[..., Awaitable[Any]])


class Unit:
    __slots__ = ("detail", "kind", "name", "stall_after", "stalled_at", "started", "task")

    def __init__(self, name: str, kind: str, stall_after: float | None, task: Any) -> None:
        self.name = name
        self.kind = kind
        self.stall_after = stall_after
        self.task = task
        self.started = time.monotonic()
        self.detail: str | None = None
        self.stalled_at: float | None = None

    def record(self, now: float) -> InflightUnit:
        task_name = None
        if self.task is not None:
            try:
                task_name = self.task.get_name()
            except Exception:
                task_name = "<unnamed>"
        return InflightUnit(self.name, self.kind, now - self.started, task_name, self.detail)


def snapshot(table: dict[int, Unit]) -> list[Unit]:
    for _ in range(50):
        try:
            return list(table.values())
        except RuntimeError:  # resized by the loop thread mid-copy
            continue
    return []


class watch:
    """Mark a unit of work: listed in every dump while open; a stall dump if overdue.

    Use as ``async with watch("reconcile", stall_after=20):`` or as a decorator
    ``@watch("reconcile")`` on a coroutine function. ``stall_after=None`` means
    the ``stall_after`` given to install(). Costs a dict insert and delete
    when nothing is wrong; a no-op where no watched loop runs.
    """

    __slots__ = ("_key", "_table", "_unit", "kind", "name", "stall_after")

    def __init__(self, name: str, *, stall_after: float | None = None, kind: str = "watch") -> None:
        if stall_after is not None and not stall_after > 0:
            raise ValueError(f"stall_after must be > 0, got {stall_after!r}")
        self.name = name
        self.stall_after = stall_after
        self.kind = kind
        self._unit: Unit | None = None
        self._table: dict[int, Unit] | None = None
        self._key = 0

    def _enter(self) -> Unit | None:
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return None
        w = _state.by_loop.get(loop)
        if w is None:
            return None
        unit = Unit(self.name, self.kind, self.stall_after, asyncio.current_task(loop))
        self._table = w.inflight
        self._key = id(unit)
        self._table[self._key] = unit
        self._unit = unit
        return unit

    def _exit(self) -> None:
        if self._table is not None:
            self._table.pop(self._key, None)
            unit, self._unit, self._table = self._unit, None, None
            if unit is not None and unit.stalled_at is not None:
                w = _state.by_loop.get(asyncio.get_running_loop())
                if w is not None:
                    w.stall_ended(unit)

    async def __aenter__(self) -> watch:
        self._enter()
        return self

    async def __aexit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._exit()

    def set_detail(self, detail: str) -> None:
        """Say how far this unit got (shown in dumps), e.g. 'headers received'."""
        if self._unit is not None:
            self._unit.detail = detail

    def __call__(self, fn: F) -> F:
        name, stall_after, kind = self.name, self.stall_after, self.kind

        @functools.wraps(fn)
        async def wrapper(*args: Any, **kwargs: Any) -> Any:
            async with watch(name, stall_after=stall_after, kind=kind):
                return await fn(*args, **kwargs)

        return wrapper  # type: ignore[return-value]
