"""Who holds (or will complete) what a party waits on (wait-for graph, step 2).

Everything is read during one capture, on the watchdog thread, from live
frames and task objects; nothing here outlives ``WaitWorld``.

* An RLock knows its owner (``primitives.rlock_owner``): certain.
* A plain Lock, a Semaphore, an asyncio Lock record no owner: the holders are
  inferred from the threads and tasks whose current line is lexically inside
  a ``with``/``async with`` block on that very object (``wait_source``), and
  marked ``certain: false``. A party that sits in ``Condition.wait()`` inside
  ``with cond:`` has released the lock and is not a holder.
* An Event, a Queue, a Condition's notify, a bare Future: nobody holds them;
  the parties whose function calls ``ev.set()``/``q.put()``/``fut.set_result()``
  on the same object may complete them (``certain: false``).
* A task, ``gather``, a TaskGroup: the awaited task(s) - certain.
* An executor job: the worker thread running it, or, queued, every busy worker
  of its pool. A ``run_coroutine_threadsafe`` future whose callback waits in
  the blocked loop's own ready queue: the loop thread itself (a deadlock).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import dataclasses
import threading
import types
import weakref
from typing import Any

from . import primitives as P
from .tasks import _task_name, raw_chain
from .wait_source import MISSING, call_args, code_info, frame_locals, resolve, static_attr

MAX_TASKS_SCANNED = 200_000
"""Tasks whose frames are searched for ``with`` blocks and completing calls."""

_COMPLETING = {
    "set": ("set",), "notify": ("notify", "notify_all"), "get": ("put", "put_nowait"),
    "put": ("get", "get_nowait"), "join": ("task_done",),
    "future": ("set_result", "set_exception"), "result": ("set_result", "set_exception"),
}
_COND_WAITS = frozenset(c for c in (getattr(f, "__code__", None) for f in (
    threading.Condition.wait, threading.Condition.wait_for,
    asyncio.Condition.wait, asyncio.Condition.wait_for)) if c is not None)


@dataclasses.dataclass(eq=False)
class Holder:
    party: P.Party
    certain: bool
    why: str | None = None  # "inside `with self._lock:` (line 31)"
    note: str | None = None


@dataclasses.dataclass(eq=False)
class Found:
    holders: list[Holder]
    unknown: str | None = None
    state: str | None = None
    self_loop: bool = False  # completed only by the blocked loop itself


class WaitWorld:
    """The threads and tasks of one capture, indexed on demand."""

    def __init__(self, *, loop: Any, loop_ident: int | None, tops: dict[int, types.FrameType],
                 tasks: list[Any], current: Any, kind: str) -> None:
        self.loop = loop
        self.loop_ident = loop_ident
        self.tops = tops
        self.tasks = tasks
        self.current = current
        self.frozen = kind != "stall"
        self._parties: dict[tuple[str, int], P.Party] = {}
        self._names = {t.ident: t.name for t in threading.enumerate()}
        self._held: dict[int, tuple[Any, list[Holder]]] | None = None
        self._calls: dict[int, tuple[Any, list[tuple[P.Party, str, int]]]] | None = None
        self._workers: list[tuple[P.Party, Any, Any]] | None = None
        self._me = threading.get_ident()

    # -- parties -----------------------------------------------------------------
    def thread(self, ident: int) -> P.Party | None:
        key = ("thread", ident)
        if key in self._parties:
            return self._parties[key]
        top = self.tops.get(ident)
        if top is None:
            return None
        frames: list[types.FrameType] = []
        f: types.FrameType | None = top
        while f is not None and len(frames) < 200:
            frames.append(f)
            f = f.f_back
        frames.reverse()
        name = self._names.get(ident) or f"<thread {ident}>"
        p = self._parties[key] = P.Party("thread", key, name, frames, ident=ident)
        return p

    def task(self, task: Any) -> P.Party:
        if self.frozen and task is self.current and self.loop_ident is not None:
            loop_party = self.thread(self.loop_ident)  # a running task is the loop thread
            if loop_party is not None:
                return loop_party
        key = ("task", id(task))
        if key in self._parties:
            return self._parties[key]
        try:
            frames, leaf = raw_chain(task.get_coro())
        except Exception:  # the task changed under us
            frames, leaf = [], None
        waiter = getattr(task, "_fut_waiter", None)
        p = self._parties[key] = P.Party("task", key, _task_name(task), frames, task=task,
                                         leaf=waiter if waiter is not None else leaf)
        return p

    def all_parties(self) -> list[P.Party]:
        out = [p for p in (self.thread(i) for i in list(self.tops) if i != self._me) if p]
        out += [self.task(t) for t in self.tasks[:MAX_TASKS_SCANNED] if t is not self.current]
        return out

    # -- indexes -------------------------------------------------------------------
    def _build(self) -> None:
        held: dict[int, tuple[Any, list[Holder]]] = {}
        calls: dict[int, tuple[Any, list[tuple[P.Party, str, int]]]] = {}
        for party in self.all_parties():
            released: set[int] = set()  # conditions this party waits in (lock released)
            for f in party.frames:
                if f.f_code in _COND_WAITS:
                    cond = P.self_of(f)
                    released.add(id(cond))
                    released.add(id(static_attr(cond, "_lock")))
            for f in party.frames:
                info = code_info(f.f_code)
                if not info.withs and not info.calls:
                    continue
                line = f.f_lineno or 0
                loc: Any = None
                for w in info.withs:
                    if not w.first <= line <= w.last:
                        continue
                    loc = frame_locals(f) if loc is None else loc
                    for path in w.paths:
                        obj = resolve(path, f, loc)
                        if obj is MISSING or id(obj) in released:
                            continue
                        h = Holder(party, False, f"inside `{w.text}` (line {w.line})")
                        for o in _aliases(obj):
                            held.setdefault(id(o), (o, []))[1].append(h)
                for c in info.calls:
                    loc = frame_locals(f) if loc is None else loc
                    obj = resolve(c.path, f, loc)
                    if obj is not MISSING:
                        calls.setdefault(id(obj), (obj, []))[1].append((party, c.method, c.line))
        self._held, self._calls = held, calls

    def held_by(self, obj: Any) -> list[Holder]:
        if self._held is None:
            self._build()
        assert self._held is not None
        hit = self._held.get(id(obj))
        return list(hit[1]) if hit is not None and hit[0] is obj else []

    def completers(self, obj: Any, methods: tuple[str, ...], waiter: P.Party) -> list[Holder]:
        if self._calls is None:
            self._build()
        assert self._calls is not None
        hit = self._calls.get(id(obj))
        out: list[Holder] = []
        seen: set[tuple[str, int]] = set()
        for party, method, line in (hit[1] if hit is not None and hit[0] is obj else []):
            if method in methods and party is not waiter and party.key not in seen:
                seen.add(party.key)
                out.append(Holder(party, False, f"its function calls .{method}() (line {line})"))
        return out

    def workers(self) -> list[tuple[P.Party, Any, Any]]:
        """(worker thread, its executor or None, the future it runs or None)."""
        if self._workers is not None:
            return self._workers
        out = []
        for ident in list(self.tops):
            party = self.thread(ident)
            if party is None:
                continue
            executor = running = None
            is_worker = False
            for f in party.frames:
                if f.f_code is P.WORKER:
                    is_worker = True
                    ref = frame_locals(f).get("executor_reference")
                    executor = ref() if type(ref) is weakref.ref else None
                elif f.f_code is P.WORK_ITEM_RUN:
                    item = P.self_of(f)
                    running = static_attr(item, "future") if item is not MISSING else None
            if is_worker:
                out.append((party, executor, None if running is MISSING else running))
        self._workers = out
        return out

    # -- holders per primitive -------------------------------------------------------
    def find(self, wait: P.Wait, waiter: P.Party) -> Found:
        obj, t, mode = wait.obj, wait.type, wait.mode
        if t in ("threading.Lock", "threading.RLock") or (t == "threading.Condition"
                                                           and mode == "acquire"):
            lock = static_attr(obj, "_lock") if t == "threading.Condition" else obj
            owner = P.rlock_owner(lock)
            if owner is not None:
                party = self.thread(owner)
                if party is not None:
                    return Found([Holder(party, True, "owner of the RLock")])
            return self._inferred(obj, "a plain Lock records no owner")
        if t in ("threading.Semaphore", "threading.BoundedSemaphore", "asyncio.Semaphore",
                 "asyncio.BoundedSemaphore"):
            value = static_attr(obj, "_value")
            found = self._inferred(obj, "a Semaphore records no holders")
            found.state = f"value {value}" if type(value) is int else None
            return found
        if t in ("asyncio.Lock", "asyncio.Condition") and mode == "acquire":
            return self._inferred(obj, "an asyncio.Lock records no owner")
        if t in ("threading.Thread", "thread"):
            ident = static_attr(obj, "_ident")
            party = self.thread(ident) if type(ident) is int else None
            if party is None:
                return Found([], "the thread is not running")
            why = "runs the job" if mode == "worker" else "the joined thread"
            return Found([Holder(party, True, why)])
        if mode == "task":
            return Found([Holder(self.task(obj), True, "the awaited task")])
        if mode == "children":
            if t == "asyncio.gather":
                # _GatheringFuture keeps _children in the C Future's instance dict, which
                # has no __dict__ descriptor to read statically. The type is exactly
                # asyncio's own (task_wait checked): a plain getattr runs no app code.
                kids = getattr(obj, "_children", ())
            else:
                kids = static_attr(obj, "_tasks")
            kids = () if kids is MISSING else kids
            pending = [k for k in list(kids or ()) if P.sub(k, asyncio.Future) and not k.done()]
            return Found([Holder(self.task(k), True, "an unfinished child") for k in pending],
                         None if pending else "no unfinished child")
        if mode == "result" and P.sub(obj, concurrent.futures.Future):
            return self._job(obj, wait, waiter)
        methods = _COMPLETING.get(mode)
        if methods:
            hs = self.completers(obj, methods, waiter)
            return Found(hs, None if hs else f"no thread or task calls {'/'.join(methods)} on it")
        return Found([], "unknown")

    def _inferred(self, obj: Any, no_owner: str) -> Found:
        if type(obj) is P.LockType and not obj.locked():
            return Found([], "not held at capture (being acquired)")
        hs = self.held_by(obj)
        if hs:
            return Found(hs)
        return Found([], f"{no_owner}; no thread or task is inside a with block on it")

    def _job(self, cf: Any, wait: P.Wait, waiter: P.Party) -> Found:
        """A concurrent.futures.Future: its worker, its busy pool, or a loop's task."""
        for party, _ex, running in self.workers():
            if running is cf:
                return Found([Holder(party, True, "runs the job")])
        loop_party = self.thread(self.loop_ident) if self.loop_ident is not None else None
        if loop_party is not None and self._scheduled_here(cf, wait):
            return Found([Holder(loop_party, True,
                                 note="the coroutine is scheduled on this loop, which waits here")],
                         self_loop=True)
        for cb in P.callbacks(cf):
            src = P.closure_var(cb, P.CHECK_CANCEL, "source")
            if P.sub(src, asyncio.Future):
                owner = self.task(src) if P.sub(src, asyncio.Task) else None
                if owner is not None:
                    here = _loop_of(src) is self.loop
                    if here and self.frozen and loop_party is not None:
                        return Found([Holder(loop_party, True, note=(
                            f"its task {owner.name!r} runs on this loop, which waits here"))],
                            self_loop=True)
                    return Found([Holder(owner, True, "the coroutine's task")])
        state = static_attr(cf, "_state")
        if state == "PENDING":
            pools: dict[int, list[P.Party]] = {}
            for party, ex, running in self.workers():
                if ex is not None and running is not None:
                    pools.setdefault(id(ex), []).append(party)
            default = static_attr(self.loop, "_default_executor")
            busy = [parties for i, parties in pools.items()
                    if _all_busy(self.workers(), i) and _queued(self.workers(), i)]
            if len(busy) > 1 and default is not MISSING:
                busy = [pools[id(default)]] if id(default) in pools else busy[:1]
            if busy:
                wait.type = "executor"
                return Found([Holder(p, True, "a busy worker of the pool") for p in busy[0]],
                             state="queued behind busy workers")
        hs = self.completers(cf, ("set_result", "set_exception"), waiter)
        return Found(hs, None if hs else "no worker runs it and no thread completes it")

    def _scheduled_here(self, cf: Any, wait: P.Wait) -> bool:
        """``run_coroutine_threadsafe(coro, <this loop>)`` whose callback has not run."""
        ready = static_attr(self.loop, "_ready")  # asyncio's deque of Handles
        if ready is not MISSING:
            for _ in range(20):
                try:
                    handles = list(ready)
                    break
                except RuntimeError:
                    continue
            else:
                handles = []
            for h in handles:
                cb = static_attr(h, "_callback")
                if P.closure_var(cb, P.RCT_CALLBACK, "future") is cf:
                    return True
            return False
        # uvloop: no visible ready queue. A pending future that no worker runs and
        # nothing is chained to yet, in a function that calls
        # run_coroutine_threadsafe(..., <this loop>): its callback waits on this loop.
        f = wait.at
        if f is None or not self.frozen or static_attr(cf, "_state") != "PENDING" or \
                P.callbacks(cf):
            return False
        for args in call_args(f.f_code, "run_coroutine_threadsafe"):
            target = args[1] if len(args) > 1 else None
            if target is not None and resolve(target, f) is self.loop:
                return True
        return False


def _aliases(obj: Any) -> list[Any]:
    """A Condition is held by holding its lock: index both."""
    if P.sub(obj, threading.Condition) or P.sub(obj, asyncio.Condition):
        inner = static_attr(obj, "_lock")
        if inner is not MISSING:
            return [obj, inner]
    return [obj]


_GET_LOOPS = tuple(getattr(c, "get_loop", None) for c in (
    asyncio.Future, asyncio.Task, getattr(asyncio.futures, "_PyFuture", None),
    getattr(asyncio.tasks, "_PyTask", None)))


def _loop_of(fut: Any) -> Any:
    """The loop of an asyncio future: ``_loop`` (pure Python) or the builtin ``get_loop``."""
    loop = static_attr(fut, "_loop")
    if loop is not MISSING:
        return loop
    get = next((d["get_loop"] for d in (k.__dict__ for k in type(fut).__mro__)
                if "get_loop" in d), None)
    if any(get is g for g in _GET_LOOPS) and callable(get):
        try:
            return get(fut)  # asyncio's own (C) method: no application code
        except Exception:
            return None
    return None


def _all_busy(workers: list[tuple[P.Party, Any, Any]], ex_id: int) -> bool:
    mine = [w for w in workers if w[1] is not None and id(w[1]) == ex_id]
    return bool(mine) and all(w[2] is not None for w in mine)


def _queued(workers: list[tuple[P.Party, Any, Any]], ex_id: int) -> bool:
    for _p, ex, _r in workers:
        if ex is not None and id(ex) == ex_id:
            q = static_attr(ex, "_work_queue")
            try:
                return q is MISSING or type(q).__module__ != "_queue" or q.qsize() > 0
            except Exception:
                return True
    return False
