"""Units of work in flight: watch() sections and framework requests.

Written on the loop thread (open/close), read by the watchdog thread. Each
watched loop has a plain dict ``LoopWatch.inflight`` keyed by ``id(unit)``:
a single ``d[k] = v`` or ``d.pop(k, None)`` is atomic under the GIL, so the
loop thread never takes a lock on a request's path, and the watchdog copies
the values with ``list(d.values())`` retried on the RuntimeError a concurrent
resize can raise. The one write the watchdog makes is ``pop(k, None)`` of a
client request whose response was closed without the loop thread telling us
(see ``Unit.done_probe``); the loop thread's own pop uses a default, so the
two never conflict.

Names and details come from the application (request paths, URLs): they
pass the install's redaction rule (``_redact``) when a unit is opened, and
again when it is recorded (details, task names, a route template found late).
"""

from __future__ import annotations

import asyncio
import functools
import time
from collections.abc import Awaitable, Callable
from types import TracebackType
from typing import Any, Protocol, TypeVar

from . import _redact, _state
from ._snapshot.model import InflightUnit


class Owner(Protocol):
    """What a unit needs of the handle of its loop (``_handle.LoopWatch``)."""

    inflight: dict[int, Unit]
    config: Any
    """The install's settings (``_config.Config``): ``redact`` is read."""

    def stall_ended(self, unit: Unit) -> None: ...

F = TypeVar("F", bound=Callable[..., Awaitable[Any]])

_monotonic = time.monotonic
_get_running_loop = asyncio.get_running_loop
_current_task = asyncio.current_task


class Unit:
    """One unit of work in flight. Plain attributes, written by the loop thread.

    ``phase``/``phase_at``/``phase_tail`` describe how far an outbound
    request got; ``record()`` renders them relative to the capture time, e.g.
    ``GET http://h/list-users — status 200, headers received 41.2 s ago, body
    not finished``.
    """

    __slots__ = (
        "detail", "done_probe", "kind", "name", "namer", "owner", "phase", "phase_at",
        "phase_tail", "request_id", "shown", "stall_after", "stalled_at", "started", "task",
    )

    def __init__(self, name: str, kind: str, stall_after: float | None, task: Any,
                 owner: Owner | None = None, request_id: str | None = None) -> None:
        self.name = name
        self.kind = kind
        self.stall_after = stall_after
        self.task = task
        self.owner = owner
        self.request_id = request_id
        self.started = _monotonic()
        self.detail: str | None = None
        self.stalled_at: float | None = None
        self.phase: str | None = None
        self.phase_at = 0.0
        self.phase_tail: str | None = None
        self.done_probe: Callable[[], bool] | None = None
        # Called by the watchdog thread when recording: a better name found
        # after the unit opened (an ASGI route template, set by the router once
        # it matched). Plain reads only; once it answers, ``name`` is replaced
        # (a single store: the loop thread never writes ``name`` after opening).
        self.namer: Callable[[], str | None] | None = None
        # ``name`` as recorded: redacted on first use, on the watchdog thread (or
        # the events of a stall), never on the loop thread's hot path.
        self.shown: str | None = None

    def _rule(self) -> _redact.Rule | None:
        owner = self.owner
        return owner.config.redact if owner is not None else None

    def current_name(self) -> str:
        """``name``, replaced by the namer's answer once it has one (watchdog thread)."""
        namer = self.namer
        if namer is not None:
            try:
                better = namer()
            except Exception:  # the probed object changed under us: keep the name
                better = None
            if better:
                self.name, self.shown = better, None
                self.namer = None
        return self.shown_name()

    def shown_name(self) -> str:
        """``name`` passed through the redaction rule (computed once)."""
        shown = self.shown
        if shown is None:
            shown = self.shown = _redact.apply(self._rule(), self.name)
        return shown

    def set_phase(self, phase: str, tail: str | None = None) -> None:
        """Record how far this unit got (loop thread)."""
        # Three stores; the watchdog may read a mix of old and new values
        # for one capture, which at worst shows the previous phase's age.
        self.phase_at = _monotonic()
        self.phase = phase
        self.phase_tail = tail

    def describe(self, now: float) -> str | None:
        if self.detail is not None:
            return self.detail
        phase = self.phase
        if phase is None:
            return None
        tail = self.phase_tail
        text = f"{self.name} — {phase} {max(0.0, now - self.phase_at):.1f} s ago"
        return f"{text}, {tail}" if tail else text

    def record(self, now: float, subject: Any = None) -> InflightUnit:
        """Plain data for a dump; ``subject`` is the task the dump is about."""
        task_name = None
        task = self.task
        rule = self._rule()
        if task is not None:
            try:
                task_name = _redact.apply(rule, task.get_name())
            except Exception:  # a task subclass with a broken get_name
                task_name = "<unnamed>"
        name = self.current_name()
        detail = self.describe(now)
        return InflightUnit(
            name, self.kind, now - self.started, task_name,
            None if detail is None else _redact.apply(rule, detail),
            request_id=self.request_id,
            in_blocking_task=subject is not None and task is subject,
        )


def open_unit(name: str, kind: str = "watch", stall_after: float | None = None,
              request_id: str | None = None) -> Unit | None:
    """Register a unit on the running loop's table; None where no watched loop runs.

    Loop thread only. Cost: a dict lookup, one small object, a dict insert.
    """
    try:
        loop = _get_running_loop()
    except RuntimeError:
        return None
    w = _state.by_loop.get(loop)
    if w is None:
        return None
    # Not redacted here (the loop thread's hot path): on first use, shown_name().
    unit = Unit(name, kind, stall_after, _current_task(loop), w, request_id)
    w.inflight[id(unit)] = unit
    return unit


def close_unit(unit: Unit) -> None:
    """Remove a unit (loop thread); report ``stall_ended`` if it had stalled."""
    w = unit.owner
    if w is None:
        return
    if w.inflight.pop(id(unit), None) is not None and unit.stalled_at is not None:
        w.stall_ended(unit)


def _copy(table: dict[int, Unit]) -> list[Unit]:
    for _ in range(50):
        try:
            return list(table.values())
        except RuntimeError:  # resized by the loop thread mid-copy
            continue
    return []


def snapshot(table: dict[int, Unit]) -> list[Unit]:
    """The units in flight now (watchdog thread), dropping finished client requests."""
    units = _copy(table)
    live = []
    for u in units:
        probe = u.done_probe
        if probe is not None:
            try:
                done = probe()
            except Exception:  # the probed object changed under us: keep the unit
                done = False
            if done:
                # Finished without the loop thread closing it (response released
                # unread): drop it here. Atomic pop; see the module docstring.
                if table.pop(id(u), None) is not None and u.stalled_at is not None \
                        and u.owner is not None:
                    u.owner.stall_ended(u)
                continue
        live.append(u)
    return live


MAX_RECORDS = 500
"""Units listed per dump: the oldest ones and every unit of the dump's task."""


def records(table: dict[int, Unit], now: float, subject: Any = None) -> tuple[InflightUnit, ...]:
    """Plain records of the units in flight (oldest first), marking those of task ``subject``."""
    units = snapshot(table)  # insertion order: oldest first
    if len(units) <= MAX_RECORDS:
        return tuple(u.record(now, subject) for u in units)
    kept = [u for i, u in enumerate(units) if i < MAX_RECORDS or u.task is subject]
    out = [u.record(now, subject) for u in kept]
    out.append(InflightUnit(f"({len(units) - len(kept)} more units in flight, not listed)",
                            "omitted", 0.0, None))
    return tuple(out)


class watch:
    """Mark a unit of work: listed in every dump while open; a stall dump if overdue.

    Use as ``async with watch("reconcile", stall_after=20):`` or as a decorator
    ``@watch("reconcile")`` on a coroutine function. ``stall_after=None`` means
    the ``stall_after`` given to install(). Costs a dict insert and delete
    when nothing is wrong; a no-op where no watched loop runs. One ``watch``
    object is one unit: create one per ``async with`` (the decorator does).
    """

    __slots__ = ("_unit", "kind", "name", "stall_after")

    def __init__(self, name: str, *, stall_after: float | None = None, kind: str = "watch") -> None:
        if stall_after is not None and not stall_after > 0:
            raise ValueError(f"stall_after must be > 0, got {stall_after!r}")
        self.name = name
        self.stall_after = stall_after
        self.kind = kind
        self._unit: Unit | None = None

    async def __aenter__(self) -> watch:
        self._unit = open_unit(self.name, self.kind, self.stall_after)
        return self

    async def __aexit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        unit, self._unit = self._unit, None
        if unit is not None:
            close_unit(unit)

    def set_detail(self, detail: str) -> None:
        """Say how far this unit got (shown in dumps), e.g. 'page 3 of 10'."""
        if self._unit is not None:
            self._unit.detail = detail

    def __call__(self, fn: F) -> F:
        name, stall_after, kind = self.name, self.stall_after, self.kind

        @functools.wraps(fn)
        async def wrapper(*args: Any, **kwargs: Any) -> Any:
            unit = open_unit(name, kind, stall_after)
            try:
                return await fn(*args, **kwargs)
            finally:
                if unit is not None:
                    close_unit(unit)

        return wrapper  # type: ignore[return-value]
