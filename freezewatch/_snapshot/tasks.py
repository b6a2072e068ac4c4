"""Tasks of a loop, each with its full await chain, grouped by identical chain.

``Task.get_stack()`` gives only the outermost frame of a suspended task; the
chain a person needs is found by following ``cr_await`` (coroutines),
``gi_yieldfrom`` (generator-based awaitables such as ``Future.__await__``)
and ``ag_await`` (async generators) down to the leaf.

Runs on the watchdog thread while the loop thread may still execute bytecode
between GIL switches, so everything here tolerates objects changing under it.
"""

from __future__ import annotations

import asyncio
import types
from collections.abc import Callable
from typing import Any

from .frames import frame_record
from .model import Frame, TaskGroup

MAX_CHAIN = 100
"""Links followed in one await chain."""
MAX_NAMES = 5
"""Task names kept per group."""
_RETRIES = 50


def _frame_of(obj: Any) -> tuple[types.FrameType | None, Any, bool]:
    """(frame, next awaitable, is_coroutine_like) for one link of a chain."""
    if isinstance(obj, types.CoroutineType):
        return obj.cr_frame, obj.cr_await, True
    if isinstance(obj, types.GeneratorType):
        return obj.gi_frame, obj.gi_yieldfrom, True
    if isinstance(obj, types.AsyncGeneratorType):
        return obj.ag_frame, obj.ag_await, True
    # Cython/compiled coroutines (uvloop, aiohttp's C parts) expose the same names.
    for frame_attr, next_attr in (("cr_frame", "cr_await"), ("gi_frame", "gi_yieldfrom")):
        if hasattr(obj, frame_attr):
            return getattr(obj, frame_attr, None), getattr(obj, next_attr, None), True
    return None, None, False


def raw_chain(coro: Any) -> tuple[list[types.FrameType], Any]:
    """Frames of the await chain starting at ``coro`` (outermost first) and the leaf."""
    frames: list[types.FrameType] = []
    obj = coro
    for _ in range(MAX_CHAIN):
        if obj is None:
            return frames, None
        frame, nxt, coro_like = _frame_of(obj)
        if not coro_like:
            return frames, obj
        if frame is None:  # finished, or not started yet
            return frames, None
        frames.append(frame)
        obj = nxt
    return frames, obj


def describe(obj: Any) -> str | None:
    """A short, safe description of what a chain ends on (never calls user repr)."""
    if obj is None:
        return None
    if isinstance(obj, asyncio.Task):
        try:
            return f"Task {obj.get_name()!r}"
        except Exception:
            return "Task"
    return type(obj).__qualname__


def _task_name(task: asyncio.Task[Any]) -> str:
    try:
        return task.get_name()
    except Exception:
        return f"<task {id(task):#x}>"


def _coro_name(coro: Any) -> str:
    return str(getattr(coro, "__qualname__", None) or type(coro).__qualname__)


def task_state(task: asyncio.Task[Any], current: asyncio.Task[Any] | None) -> str:
    if task is current:
        return "running"
    cancelling = getattr(task, "cancelling", None)
    try:
        if cancelling is not None and cancelling():
            return "cancelling"
    except Exception:
        pass
    return "pending"


def all_tasks(loop: asyncio.AbstractEventLoop) -> list[asyncio.Task[Any]]:
    """The loop's unfinished tasks, read from another thread.

    asyncio.all_tasks() itself retries when the task set changes size while
    it is copied; we add a retry of our own around the whole call because
    the loop thread may run between GIL switches during our read.
    """
    for _ in range(_RETRIES):
        try:
            return list(asyncio.all_tasks(loop))
        except RuntimeError:
            continue
    return []


def task_chain(task: asyncio.Task[Any]) -> tuple[tuple[Frame, ...], str | None]:
    """The await chain of one task as plain frames, and what it ends on."""
    frames, leaf = raw_chain(task.get_coro())
    waiter = getattr(task, "_fut_waiter", None)
    return tuple(frame_record(f) for f in frames), describe(waiter if waiter is not None else leaf)


def _add_age(ages: dict[tuple[Any, ...], list[Any]], key: tuple[Any, ...],
             age_of: Callable[[asyncio.Task[Any]], float | None], task: Any) -> None:
    try:
        age = age_of(task)
    except Exception:  # the task changed under us: its age is unknown
        age = None
    if age is None:
        return
    span = ages.get(key)
    if span is None:
        ages[key] = [1, age, age]
    else:
        span[0] += 1
        span[1] = min(span[1], age)
        span[2] = max(span[2], age)


def group_tasks(
    tasks: list[asyncio.Task[Any]], current: asyncio.Task[Any] | None,
    age_of: Callable[[asyncio.Task[Any]], float | None] | None = None,
) -> tuple[TaskGroup, ...]:
    """Group tasks by identical (coroutine, state, await chain, leaf type).

    Only (code, line) pairs are collected per task; frames become records once
    per group, so 100,000 identical tasks cost one rendering. ``age_of`` (see
    waits.py) gives each task's wait age; groups carry their min and max.
    """
    groups: dict[tuple[Any, ...], list[Any]] = {}
    ages: dict[tuple[Any, ...], list[Any]] = {}  # key -> [known, min, max]
    for task in tasks:
        try:
            coro = task.get_coro()
            frames, leaf = raw_chain(coro)
            waiter = getattr(task, "_fut_waiter", None)
            awaiting = describe(waiter if waiter is not None else leaf)
            key = (
                _coro_name(coro),
                task_state(task, current),
                tuple((f.f_code, f.f_lineno) for f in frames),
                awaiting,
            )
        except Exception:  # the task changed under us; it is still counted
            key = ("<unreadable>", "unknown", (), None)
            frames = []
        entry = groups.get(key)
        if entry is None:
            groups[key] = [frames, 1, [_task_name(task)]]
        else:
            entry[1] += 1
            if len(entry[2]) < MAX_NAMES:
                entry[2].append(_task_name(task))
        if age_of is not None:
            _add_age(ages, key, age_of, task)
    out = []
    for key, (frames, count, names) in groups.items():
        coro_name, state, _codes, awaiting = key
        chain = tuple(frame_record(f) for f in frames)
        known, low, high = ages.get(key) or (0, None, None)
        out.append(TaskGroup(coro_name, state, chain, awaiting, count, tuple(names),
                             waiting=(low if known == count else 0.0) if known else None,
                             waiting_longest=high))
    # Running task first, then biggest groups.
    out.sort(key=lambda g: (g.state != "running", -g.count))
    return tuple(out)
