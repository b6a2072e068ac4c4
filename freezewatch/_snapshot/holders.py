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
* An executor job (jobs.py): the worker thread running it, or, queued, every
  busy worker of its pool. A ``run_coroutine_threadsafe`` future whose callback waits in
  the blocked loop's own ready queue: the loop thread itself (a deadlock).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading
import time
import types
from typing import Any

from . import jobs as _jobs
from . import primitives as P
from .tasks import _task_name, raw_chain
from .wait_source import MISSING, CodeInfo, code_info, frame_locals, resolve, static_attr

MAX_TASKS_SCANNED = 200_000
"""Tasks whose frames are searched for ``with`` blocks and completing calls."""
SCAN_BUDGET = 1.5
"""Seconds the task scan may take (about 5 us a task: 100,000 tasks fit)."""

_COMPLETING = {
    "set": ("set",), "notify": ("notify", "notify_all"), "get": ("put", "put_nowait"),
    "put": ("get", "get_nowait"), "join": ("task_done",),
    "future": ("set_result", "set_exception"), "result": ("set_result", "set_exception"),
}
_COND_WAITS = frozenset(c for c in (getattr(f, "__code__", None) for f in (
    threading.Condition.wait, threading.Condition.wait_for,
    asyncio.Condition.wait, asyncio.Condition.wait_for)) if c is not None)


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
        self._held: dict[int, tuple[Any, list[tuple[Any, str]]]] = {}
        self._calls: dict[int, tuple[Any, list[tuple[Any, str, int]]]] = {}
        self._infos: dict[int, CodeInfo] = {}
        self._cond_waits = {id(c) for c in _COND_WAITS}
        self._scanned = 0  # 0: nothing indexed, 1: the threads, 2: threads and tasks
        self.cut_short: str | None = None  # why the task scan stopped early, if it did
        self._is_cond: dict[int, bool] = {}
        self._chain_like: dict[int, bool] = {}  # id(type) -> links on (True) or ends a chain
        self._types: list[type] = []
        self.workers: list[tuple[P.Party, Any, Any]] | None = None  # jobs.py
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

    # -- indexes -------------------------------------------------------------------
    # id(object) -> (object, entries). An entry names its party by a *source* (a
    # thread ident or a task): a Party (with its whole stack) is only made for
    # the entries of the objects actually asked about.
    def _build(self, tasks: bool) -> None:
        """Index what the other threads (or the tasks) are inside a ``with`` block on,
        and what their functions call completing methods on."""
        if not tasks:
            for ident in list(self.tops):
                party = self.thread(ident) if ident != self._me else None
                if party is not None:
                    self._index(ident, party.frames)
            return
        # The hot loop (100,000s of tasks): chains walked with direct attribute
        # reads; nothing is allocated for a task none of whose frames matters
        # (allocations would also set off collections of the whole heap).
        coro_t, gen_t = types.CoroutineType, types.GeneratorType
        current = self.current
        infos = self._infos
        cond_waits = self._cond_waits
        chain_like = self._chain_like
        _id = id
        deadline = time.perf_counter() + SCAN_BUDGET
        for i, task in enumerate(self.tasks[:MAX_TASKS_SCANNED]):
            if not i & 4095 and i and time.perf_counter() > deadline:
                self.cut_short = (f"the holder search stopped after {i:,} of "
                                  f"{len(self.tasks):,} tasks")
                return
            if task is current:
                continue
            try:
                obj = task.get_coro()
            except Exception:  # a foreign task type
                continue
            hits: list[tuple[types.FrameType, CodeInfo, int]] | None = None
            released = False
            for _ in range(100):
                t = type(obj)
                if t is coro_t:
                    f, obj = obj.cr_frame, obj.cr_await
                elif t is gen_t:
                    f, obj = obj.gi_frame, obj.gi_yieldfrom
                else:  # a leaf (a future's __await__ iterator), or another chain link type
                    if obj is not None:
                        link = chain_like.get(_id(t))
                        if link is None:  # async generators, compiled (Cython) coroutines
                            link = chain_like[_id(t)] = any(
                                hasattr(t, a) for a in ("cr_frame", "gi_frame", "ag_frame"))
                            self._types.append(t)  # keeps the id valid for this capture
                        if link:
                            frames, _leaf = raw_chain(task.get_coro())
                            self._index(task, frames)
                            hits = None
                    break
                if f is None:
                    break
                code = f.f_code
                info = infos.get(_id(code))
                if info is None:
                    info = infos[_id(code)] = code_info(code)
                if info.calls:
                    hits = hits or []
                    hits.append((f, info, f.f_lineno or 0))
                elif info.withs:
                    line = f.f_lineno or 0
                    for w in info.withs:
                        if w.first <= line <= w.last:
                            hits = hits or []
                            hits.append((f, info, line))
                            break
                elif _id(code) in cond_waits:
                    released = True
            if hits:
                if released:  # a Condition.wait in the chain: the slow, careful path
                    frames, _leaf = raw_chain(task.get_coro())
                    self._index(task, frames)
                else:
                    self._record(task, hits, ())

    def _index(self, source: Any, frames: list[types.FrameType]) -> None:
        """One party's frames: those that matter, and the locks it released waiting."""
        infos = self._infos
        hits = []
        released: list[int] = []  # conditions it waits in (their lock is released)
        for f in frames:
            code = f.f_code
            info = infos.get(id(code))
            if info is None:
                info = infos[id(code)] = code_info(code)
            if info.withs or info.calls:
                hits.append((f, info, f.f_lineno or 0))
            if id(code) in self._cond_waits:
                cond = P.self_of(f)
                released += [id(cond), id(static_attr(cond, "_lock"))]
        if hits:
            self._record(source, hits, released)

    def _record(self, source: Any, hits: list[tuple[types.FrameType, CodeInfo, int]],
                released: Any) -> None:
        held, calls = self._held, self._calls
        for f, info, line in hits:
            loc: Any = None
            for w in info.withs:
                if not w.first <= line <= w.last:
                    continue
                loc = frame_locals(f) if loc is None else loc
                for path in w.paths:
                    obj = resolve(path, f, loc)
                    if obj is MISSING or id(obj) in released:
                        continue
                    for o in self._aliases(obj):
                        entry = held.get(id(o))
                        if entry is None:
                            entry = held[id(o)] = (o, [])
                        entry[1].append((source, w.why))
            for c in info.calls:
                loc = frame_locals(f) if loc is None else loc
                obj = resolve(c.path, f, loc)
                if obj is not MISSING:
                    entry2 = calls.get(id(obj))
                    if entry2 is None:
                        entry2 = calls[id(obj)] = (obj, [])
                    entry2[1].append((source, c.method, c.line))

    def _party_of(self, source: Any) -> P.Party | None:
        return self.thread(source) if type(source) is int else self.task(source)

    def _aliases(self, obj: Any) -> tuple[Any, ...]:
        """A Condition is held by holding its lock: index both (type test cached)."""
        t = type(obj)
        cond = self._is_cond.get(id(t))
        if cond is None:
            cond = self._is_cond[id(t)] = (issubclass(t, threading.Condition)
                                           or issubclass(t, asyncio.Condition))
            self._types.append(t)  # keeps the id valid for this capture
        if cond:
            inner = static_attr(obj, "_lock")
            if inner is not MISSING:
                return (obj, inner)
        return (obj,)

    def _scan(self, obj: Any) -> None:
        """Threads first (a few); tasks (maybe 100,000s) only for an asyncio primitive or
        when no thread matters. ``_scanned`` says what the index covers."""
        if not self._scanned:
            self._build(tasks=False)
            self._scanned = 1
        if self._scanned == 1 and (_is_asyncio(obj) or (id(obj) not in self._held
                                                          and id(obj) not in self._calls)):
            self._build(tasks=True)
            self._scanned = 2

    def held_by(self, obj: Any) -> list[P.Holder]:
        self._scan(obj)
        hit = self._held.get(id(obj))
        out = []
        for source, why in (hit[1] if hit is not None and hit[0] is obj else []):
            party = self._party_of(source)
            if party is not None:
                out.append(P.Holder(party, False, why))
        return out

    def completers(self, obj: Any, methods: tuple[str, ...], waiter: P.Party) -> list[P.Holder]:
        self._scan(obj)
        hit = self._calls.get(id(obj))
        out: list[P.Holder] = []
        seen: set[tuple[str, int]] = set()
        for source, method, line in (hit[1] if hit is not None and hit[0] is obj else []):
            party = self._party_of(source) if method in methods else None
            if party is not None and party is not waiter and party.key not in seen:
                seen.add(party.key)
                out.append(P.Holder(party, False, f"its function calls .{method}() (line {line})"))
        return out

    # -- holders per primitive -------------------------------------------------------
    def find(self, wait: P.Wait, waiter: P.Party) -> P.Found:
        obj, t, mode = wait.obj, wait.type, wait.mode
        if t in ("threading.Lock", "threading.RLock") or (t == "threading.Condition"
                                                           and mode == "acquire"):
            lock = static_attr(obj, "_lock") if t == "threading.Condition" else obj
            owner = P.rlock_owner(lock)
            if owner is not None:
                party = self.thread(owner)
                if party is not None:
                    return P.Found([P.Holder(party, True, "owner of the RLock")])
            return self._inferred(obj, "a plain Lock records no owner")
        if t in ("threading.Semaphore", "threading.BoundedSemaphore", "asyncio.Semaphore",
                 "asyncio.BoundedSemaphore"):
            value = static_attr(obj, "_value")
            found = self._inferred(obj, "a Semaphore records no holders")
            found.state = f"value {value}" if type(value) is int else None
            return found
        if t in ("asyncio.Lock", "asyncio.Condition") and mode == "acquire":
            return self._inferred(obj, "an asyncio.Lock records no owner")
        if mode in ("join", "worker") and P.sub(obj, threading.Thread):
            ident = static_attr(obj, "_ident")
            party = self.thread(ident) if type(ident) is int else None
            if party is None:
                return P.Found([], "the thread is not running")
            why = "runs the job" if mode == "worker" else "the joined thread"
            return P.Found([P.Holder(party, True, why)])
        if mode == "task":
            return P.Found([P.Holder(self.task(obj), True, "the awaited task")])
        if mode == "children":
            if t == "asyncio.gather":
                # _GatheringFuture keeps _children in the C Future's instance dict, which
                # has no __dict__ descriptor to read statically. The type is exactly
                # asyncio's own (task_wait checked): a plain getattr runs no app code.
                kids = getattr(obj, "_children", ())
            else:
                kids = static_attr(obj, "_tasks")
            kids = () if kids is MISSING else kids
            pending = [k for k in list(kids or ()) if P.sub(k, asyncio.Future)
                       and not (P.asyncio_own(k) and k.done())]
            return P.Found([P.Holder(self.task(k), True, "an unfinished child") for k in pending],
                         None if pending else "no unfinished child")
        if mode == "result" and P.sub(obj, concurrent.futures.Future):
            return _jobs.find_job(self, obj, wait, waiter)
        methods = _COMPLETING.get(mode)
        if methods:
            hs = self.completers(obj, methods, waiter)
            why = f"no thread or task calls {'/'.join(methods)} on it"
            why = f"{why} ({self.cut_short})" if self.cut_short else why
            return P.Found(hs, None if hs else why)
        return P.Found([], "unknown")

    def _inferred(self, obj: Any, no_owner: str) -> P.Found:
        if type(obj) is P.LockType and not obj.locked():
            return P.Found([], "not held at capture (being acquired)")
        hs = self.held_by(obj)
        if hs:
            return P.Found(hs)
        why = f"{no_owner}; no thread or task is inside a with block on it"
        return P.Found([], f"{why} ({self.cut_short})" if self.cut_short else why)

def _is_asyncio(obj: Any) -> bool:
    mod = type(obj).__module__
    return mod.startswith("asyncio") or mod == "_asyncio"
