"""Who completes a ``concurrent.futures.Future`` (wait-for graph, part of step 2).

The pool worker running it (its ``_WorkItem.run`` frame holds the future); a
job still queued: every busy worker of its pool; a ``run_coroutine_threadsafe``
future: the task it mirrors or, when its callback still waits in the blocked
loop's own ready queue, that loop thread itself (a deadlock).
"""

from __future__ import annotations

import asyncio
import weakref
from typing import Any

from . import primitives as P
from .wait_source import MISSING, call_args, frame_locals, resolve, static_attr

WaitWorld = Any
"""``holders.WaitWorld`` (the threads and tasks of one capture), passed in by
``holders``; not imported: holders imports this module."""


def workers(world: WaitWorld) -> list[tuple[P.Party, Any, Any]]:
    """(worker thread, its executor or None, the future it runs or None)."""
    if world.workers is not None:
        cached: list[tuple[P.Party, Any, Any]] = world.workers
        return cached
    out = []
    for ident in list(world.tops):
        party = world.thread(ident)
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
    world.workers = out
    return out


def find_job(world: WaitWorld, cf: Any, wait: P.Wait, waiter: P.Party) -> P.Found:
    """A concurrent.futures.Future: its worker, its busy pool, or a loop's task."""
    for party, _ex, running in workers(world):
        if running is cf:
            return P.Found([P.Holder(party, True, "runs the job")])
    loop_party = world.thread(world.loop_ident) if world.loop_ident is not None else None
    if loop_party is not None and scheduled_here(world, cf, wait):
        return P.Found([P.Holder(loop_party, True,
                                 note="the coroutine is scheduled on this loop, which waits here")],
                       self_loop=True)
    for cb in P.callbacks(cf):
        src = P.closure_var(cb, P.CHECK_CANCEL, "source")
        if P.sub(src, asyncio.Future):
            owner = world.task(src) if P.sub(src, asyncio.Task) else None
            if owner is not None:
                here = _loop_of(src) is world.loop
                if here and world.frozen and loop_party is not None:
                    return P.Found([P.Holder(loop_party, True, note=(
                        f"its task {owner.name!r} runs on this loop, which waits here"))],
                        self_loop=True)
                return P.Found([P.Holder(owner, True, "the coroutine's task")])
    state = static_attr(cf, "_state")
    if state == "PENDING":
        pools: dict[int, list[P.Party]] = {}
        for party, ex, running in workers(world):
            if ex is not None and running is not None:
                pools.setdefault(id(ex), []).append(party)
        default = static_attr(world.loop, "_default_executor")
        busy = [parties for i, parties in pools.items()
                if _all_busy(workers(world), i) and _queued(workers(world), i)]
        if len(busy) > 1 and default is not MISSING:
            busy = [pools[id(default)]] if id(default) in pools else busy[:1]
        if busy:
            wait.type = "executor"
            wait.name = wait.name or _pool_name(busy[0])
            return P.Found([P.Holder(p, True, "a busy worker of the pool") for p in busy[0]],
                           state="queued behind busy workers")
    hs = world.completers(cf, ("set_result", "set_exception"), waiter)
    return P.Found(hs, None if hs else "no worker runs it and no thread completes it")


def scheduled_here(world: WaitWorld, cf: Any, wait: P.Wait) -> bool:
    """``run_coroutine_threadsafe(coro, <this loop>)`` whose callback has not run."""
    ready = static_attr(world.loop, "_ready")  # asyncio's deque of Handles
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
    if f is None or not world.frozen or static_attr(cf, "_state") != "PENDING" or \
            P.callbacks(cf):
        return False
    for args in call_args(f.f_code, "run_coroutine_threadsafe"):
        target = args[1] if len(args) > 1 else None
        if target is not None and resolve(target, f) is world.loop:
            return True
    return False


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


def _pool_name(workers: list[P.Party]) -> str:
    """``ThreadPoolExecutor 'db' (2 workers)``, from the workers' names and count."""
    prefix = workers[0].name.rsplit("_", 1)[0] if workers else "?"
    return f"ThreadPoolExecutor {prefix!r} ({len(workers)} workers)"


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
