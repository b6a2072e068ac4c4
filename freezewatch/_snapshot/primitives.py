"""What a blocked thread or task waits on, read from its frames (wait-for graph, step 1).

A thread blocked in ``Event.wait()`` has Python frames in ``threading.py``
whose ``self`` is the Event; a task blocked in ``async with lock:`` has the
frame of ``asyncio.Lock.acquire`` at the end of its await chain. Those frames
are recognised by *code object identity* (never by name alone) and the
primitive is their ``self`` local. A C-level wait leaves no frame of its own
(``threading.Lock.acquire``, ``RLock.acquire``): then the waiter's own line is
read with ``ast`` and the dotted names on it are resolved statically until one
names a lock that is held.

Types are checked with ``issubclass(type(x), C)`` against the real classes:
``isinstance`` may consult an application-defined ``__class__``.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import concurrent.futures.thread as _cf_thread
import dataclasses
import os
import queue
import threading
import types
from typing import Any

from .frames import is_app_file
from .tasks import _task_name
from .wait_source import MISSING, acquired_on_line, line_paths, resolve, spelled, static_attr

LockType = type(threading.Lock())
RLockType = type(threading.RLock())  # _thread.RLock: the C type threading.RLock() returns


@dataclasses.dataclass(eq=False, slots=True)
class Party:
    """A thread or a task that may wait or hold; lives only during one capture."""

    kind: str  # "thread" | "task"
    key: tuple[str, int]  # ("thread", ident) | ("task", id(task))
    label: str | None  # the name; None: read from the task when first needed
    frames: list[types.FrameType]  # outermost first (thread stack / await chain)
    ident: int | None = None
    task: Any = None
    leaf: Any = None  # what a task's chain ends on (its _fut_waiter)

    @property
    def name(self) -> str:
        if self.label is None:
            self.label = _task_name(self.task)
        return self.label


@dataclasses.dataclass(eq=False)
class Wait:
    """The primitive a party waits on (live objects: used during capture only)."""

    type: str  # as users spell it: "threading.Lock", "asyncio.Queue", "executor"
    obj: Any
    mode: str  # acquire | notify | set | get | put | join | result | task | children | worker
    at: types.FrameType | None  # the frame that waits (the app line when there is one)
    name: str | None = None


@dataclasses.dataclass(eq=False, slots=True)
class Holder:
    party: Party
    certain: bool
    why: str | None = None  # "inside `with self._lock:` (line 31)"
    note: str | None = None


@dataclasses.dataclass(eq=False, slots=True)
class Found:
    holders: list[Holder]
    unknown: str | None = None
    state: str | None = None
    self_loop: bool = False  # completed only by the blocked loop itself


def _codes(*fns: Any) -> list[types.CodeType]:
    return [c for c in (getattr(f, "__code__", None) for f in fns) if c is not None]


def _inner_code(fn: Any, name: str) -> types.CodeType | None:
    for c in getattr(fn, "__code__", types.SimpleNamespace(co_consts=())).co_consts:
        if isinstance(c, types.CodeType) and c.co_name == name:
            return c
    return None


class _CodeTable:
    """code object -> (primitive family, mode), by identity (equal code objects of
    other files must not match); the primitive is the frame's ``self``."""

    def __init__(self) -> None:
        self._d: dict[int, tuple[types.CodeType, str, str]] = {}

    def __setitem__(self, code: types.CodeType, value: tuple[str, str]) -> None:
        self._d[id(code)] = (code, *value)

    def get(self, code: types.CodeType) -> tuple[str, str] | None:
        hit = self._d.get(id(code))
        return (hit[1], hit[2]) if hit is not None and hit[0] is code else None


_THREAD_CODES = _CodeTable()
_TASK_CODES = _CodeTable()
_TaskGroup: Any = getattr(asyncio, "TaskGroup", None)  # 3.11+
_THREAD_WAITS: list[tuple[Any, str, str]] = [
    (threading.Condition.wait, "threading.Condition", "notify"),
    (threading.Condition.wait_for, "threading.Condition", "notify"),
    (threading.Condition.__enter__, "threading.Condition", "acquire"),
    (threading.Event.wait, "threading.Event", "set"),
    (threading.Semaphore.acquire, "threading.Semaphore", "acquire"),
    (threading.Thread.join, "thread", "join"),
    (queue.Queue.get, "queue.Queue", "get"),
    (queue.Queue.put, "queue.Queue", "put"),
    (queue.Queue.join, "queue.Queue", "join"),
    (concurrent.futures.Future.result, "concurrent.futures.Future", "result"),
]
_TASK_WAITS: list[tuple[Any, str, str]] = [
    (asyncio.Lock.acquire, "asyncio.Lock", "acquire"),
    (asyncio.Semaphore.acquire, "asyncio.Semaphore", "acquire"),
    (asyncio.Event.wait, "asyncio.Event", "set"),
    (asyncio.Condition.wait, "asyncio.Condition", "notify"),
    (asyncio.Condition.wait_for, "asyncio.Condition", "notify"),
    (asyncio.locks._ContextManagerMixin.__aenter__, "self", "acquire"),
    (asyncio.Queue.get, "asyncio.Queue", "get"),
    (asyncio.Queue.put, "asyncio.Queue", "put"),
    (asyncio.Queue.join, "asyncio.Queue", "join"),
    (getattr(_TaskGroup, "__aexit__", None), "asyncio.TaskGroup", "children"),
    (getattr(_TaskGroup, "_aexit", None), "asyncio.TaskGroup", "children"),
]
for _table, _waits in ((_THREAD_CODES, _THREAD_WAITS), (_TASK_CODES, _TASK_WAITS)):
    for _fn, _fam, _mode in _waits:
        for _c in _codes(_fn):
            _table[_c] = (_fam, _mode)
_WAIT_FOR = _codes(asyncio.wait_for)[0]
_THREAD_FILES = frozenset(os.path.abspath(m.__file__ or "") for m in (
    threading, queue, concurrent.futures._base, _cf_thread))
_ASYNCIO_DIR = os.path.dirname(os.path.abspath(asyncio.__file__)) + os.sep

_chain_future: Any = getattr(asyncio.futures, "_chain_future", None)
CHECK_CANCEL = _inner_code(_chain_future, "_call_check_cancel")
RCT_CALLBACK = _inner_code(asyncio.run_coroutine_threadsafe, "callback")
WORKER = _codes(_cf_thread._worker)[0]
WORK_ITEM_RUN = _codes(_cf_thread._WorkItem.run)[0]


def sub(obj: Any, cls: Any) -> bool:
    """``isinstance`` without consulting ``obj.__class__`` (which app code may define)."""
    return isinstance(cls, type) and issubclass(type(obj), cls)


def closure_var(fn: Any, code: types.CodeType | None, name: str) -> Any:
    """A free variable of a stdlib closure (``fn`` must run ``code``), or MISSING."""
    if code is None or type(fn) is not types.FunctionType or fn.__code__ is not code:
        return MISSING
    try:
        cell = fn.__closure__[code.co_freevars.index(name)]  # type: ignore[index]
        return cell.cell_contents
    except (ValueError, IndexError, TypeError):
        return MISSING


def type_name(family: str, obj: Any) -> str:
    if family == "self":  # _ContextManagerMixin.__aenter__: Lock, Semaphore or Condition
        for cls, name in ((asyncio.BoundedSemaphore, "asyncio.BoundedSemaphore"),
                          (asyncio.Semaphore, "asyncio.Semaphore"),
                          (asyncio.Condition, "asyncio.Condition"), (asyncio.Lock, "asyncio.Lock")):
            if sub(obj, cls):
                return name
        return "asyncio.Lock"
    if family == "threading.Semaphore" and sub(obj, threading.BoundedSemaphore):
        return "threading.BoundedSemaphore"
    if family == "asyncio.Semaphore" and sub(obj, asyncio.BoundedSemaphore):
        return "asyncio.BoundedSemaphore"
    if family.endswith(".Queue") and type(obj).__name__ in ("LifoQueue", "PriorityQueue"):
        return family[: -len("Queue")] + type(obj).__name__
    return family


def self_of(frame: types.FrameType) -> Any:
    """The frame's ``self``; MISSING once it is gone (``Future.result`` sets
    ``self = None`` in its ``finally``: the wait is over)."""
    obj = frame.f_locals.get("self", MISSING)
    return MISSING if obj is None else obj


def _name_on(obj: Any, frames: list[types.FrameType]) -> tuple[str | None, types.FrameType | None]:
    """The first dotted name that resolves to ``obj`` on a frame's current line, innermost
    app frame first: ``self._state_lock`` -> ``Breaker._state_lock``."""
    for f in frames:
        if not is_app_file(f.f_code.co_filename):
            continue
        for path, _text in line_paths(f.f_code, f.f_lineno or 0):
            if resolve(path, f) is obj:
                return spelled(path, f), f
        return None, f
    return None, None


def held_lock(obj: Any, ident: int | None) -> bool:
    """A C lock that is taken (for an RLock: by another thread than ``ident``)."""
    if type(obj) is LockType:
        return bool(obj.locked())  # C method of the builtin type
    if type(obj) is RLockType:
        owner = rlock_owner(obj)
        return owner is not None and owner != ident
    return False


def rlock_owner(obj: Any) -> int | None:
    """The thread ident owning a C ``_thread.RLock``, None when free.

    The C RLock keeps its owner but exposes it only in its repr: ``<locked
    _thread.RLock object owner=140... count=1 at 0x...>``. ``repr`` is called
    only when ``type(obj) is _thread.RLock`` exactly: that repr is the C
    function rlock_repr, no application code (a subclass could override it).
    """
    if type(obj) is not RLockType:
        return None
    text = repr(obj)
    start = text.find("owner=")
    if start < 0:
        return None
    digits = text[start + 6:].split(" ", 1)[0]
    return int(digits) if digits.isdigit() and digits != "0" else None


def thread_wait(party: Party) -> Wait | None:
    """What a thread is blocked on, from its stack (innermost frame last)."""
    frames = party.frames
    best: tuple[str, str, Any] | None = None
    i = len(frames) - 1
    while i >= 0 and os.path.abspath(frames[i].f_code.co_filename) in _THREAD_FILES:
        hit = _THREAD_CODES.get(frames[i].f_code)
        if hit is not None:
            obj = self_of(frames[i])
            if obj is not MISSING:
                best = (hit[0], hit[1], obj)
        i -= 1
    callers = list(reversed(frames[: i + 1]))  # innermost first, outside threading/queue
    if best is not None:
        family, mode, obj = best
        if family == "threading.Condition" and mode == "acquire":
            inner = static_attr(obj, "_lock")
            if inner is MISSING or not held_lock(inner, party.ident):
                return None
        name, at = _name_on(obj, callers)
        at = at or (callers[0] if callers else None)
        if family == "thread":
            return Wait("threading.Thread", obj, "join", at, name)
        return Wait(type_name(family, obj), obj, mode, at, name)
    # No frame of its own: a C-level acquire called from the innermost frame.
    for f in callers[:1]:
        for path in acquired_on_line(f.f_code, f.f_lineno or 0):
            obj = resolve(path, f)
            if obj is not MISSING and held_lock(obj, party.ident):
                kind = "threading.Lock" if type(obj) is LockType else "threading.RLock"
                return Wait(kind, obj, "acquire", f, spelled(path, f))
    return None


def task_wait(party: Party) -> Wait | None:
    """What a task's await chain ends on."""
    frames = party.frames
    best: tuple[str, str, Any, int] | None = None
    for i in range(len(frames) - 1, -1, -1):
        f = frames[i]
        hit = _TASK_CODES.get(f.f_code)
        if hit is not None:
            obj = self_of(f)
            if obj is not MISSING:
                best = (hit[0], hit[1], obj, i)
            continue
        if f.f_code is _WAIT_FOR:  # <= 3.11: wait_for awaits its own waiter, not the task
            inner = f.f_locals.get("fut", MISSING)
            if sub(inner, asyncio.Future):
                best = ("asyncio.Task" if sub(inner, asyncio.Task) else "asyncio.Future",
                        "task", inner, i)
            continue
        if (f.f_code.co_name == "run_sync_in_worker_thread"
                and "anyio" in f.f_code.co_filename):  # FastAPI/Starlette sync endpoints
            worker = f.f_locals.get("worker", MISSING)
            if sub(worker, threading.Thread):
                best = ("thread", "worker", worker, i)
            continue
        if not f.f_code.co_filename.startswith(_ASYNCIO_DIR):
            break
    callers = list(reversed(frames))
    if best is not None:
        family, mode, obj, i = best
        name, at = _name_on(obj, list(reversed(frames[:i])))
        at = at or frames[i]  # no application frame: the library frame that waits
        if family == "thread":  # a job handed to one worker thread (anyio.to_thread)
            return Wait("executor", obj, "worker", at, name or "anyio.to_thread.run_sync")
        return Wait(type_name(family, obj), obj, mode, at, name)
    leaf = party.leaf
    if leaf is None or not sub(leaf, asyncio.Future):
        return None
    name, at = _name_on(leaf, callers)
    if sub(leaf, asyncio.Task):
        return Wait("asyncio.Task", leaf, "task", at, name)
    if type(leaf) is getattr(asyncio.tasks, "_GatheringFuture", None):
        return Wait("asyncio.gather", leaf, "children", at, name or "gather(...)")
    source = chained_source(leaf)
    if source is not MISSING and sub(source, concurrent.futures.Future):
        return Wait("executor", source, "result", at, name)
    if frames and is_app_file(frames[-1].f_code.co_filename):  # ``await fut`` in app code
        return Wait("asyncio.Future", leaf, "future", at, name)
    return None


_type_module = type.__dict__["__module__"].__get__
_ASYNCIO_MODULES = frozenset({"_asyncio", "asyncio.futures", "asyncio.tasks", "uvloop"})


def asyncio_own(obj: Any) -> bool:
    """An asyncio (or uvloop) future or task of the library's own classes: their
    methods and getters (``done()``, ``_callbacks``) are library code, not the app's."""
    return sub(obj, asyncio.Future) and _type_module(type(obj)) in _ASYNCIO_MODULES


def callbacks(fut: Any) -> list[Any]:
    """The done callbacks of an asyncio or concurrent future (C getters / plain lists)."""
    if asyncio_own(fut):
        try:
            cbs = fut._callbacks  # _asyncio.Future: a C getter; pure-Python Future: a list
        except AttributeError:
            return []
        return [cb[0] if type(cb) is tuple else cb for cb in list(cbs or ())]
    if sub(fut, concurrent.futures.Future):
        cbs = static_attr(fut, "_done_callbacks")
        return list(cbs) if type(cbs) is list else []
    return []


def chained_source(fut: Any) -> Any:
    """For a future made by ``wrap_future``/``_chain_future``: the future it mirrors."""
    for cb in callbacks(fut):
        src = closure_var(cb, CHECK_CANCEL, "source")
        if src is not MISSING:
            return src
    return MISSING
