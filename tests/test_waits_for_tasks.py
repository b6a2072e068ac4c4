"""The wait-for graph of real stalls: a watched task waits on an asyncio primitive held
(or to be completed) by a named task or thread, each pinned to its line in this file."""

from __future__ import annotations

import asyncio
import concurrent.futures
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from core_support import LOOP_FACTORIES, LoopFactory, assert_frame_is, pin
from waits_support import assert_holder, cause, stall_dump

pytestmark = pytest.mark.timeout(30)


def _start(*named: tuple[str, Any]) -> list[asyncio.Task[Any]]:
    return [asyncio.create_task(coro, name=name) for name, coro in named]


@pytest.mark.parametrize("loop_factory", LOOP_FACTORIES)
def test_asyncio_lock_held_by_named_task(dump_dir: Path, loop_factory: LoopFactory) -> None:
    """asyncio.Lock: the task inside `async with lock:` holds it (inferred)."""
    lock = asyncio.Lock()

    async def holder(done: asyncio.Event) -> None:
        async with lock:
            while not done.is_set(): await asyncio.sleep(0.01)  # pin: alock  # noqa: E701

    async def scenario(done: asyncio.Event) -> list[asyncio.Task[Any]]:
        return _start(("lock-holder", holder(done)))

    async def waiter() -> None:
        async with lock:  # pin: alock-waiter
            pass

    doc, txt = stall_dump(dump_dir, scenario, waiter, loop_factory=loop_factory)
    link = doc["waits_for"][0]
    assert link["waiter"]["task"] == "waiter"
    assert_frame_is(link["waiter"]["frame"], pin(__file__, "alock-waiter"))
    assert link["on"]["name"] == "lock"
    assert_holder(doc, txt, "task", "lock-holder", pin(__file__, "alock"), on="asyncio.Lock",
                  certain=False)
    assert cause(txt).startswith("Cause:       stall \u2014 asyncio.Lock lock held by task "
                                 "'lock-holder', at ")


@pytest.mark.parametrize("bounded", [False, True])
def test_asyncio_semaphore_holders_grouped(dump_dir: Path, bounded: bool) -> None:
    """asyncio.Semaphore(3) held by three tasks at one line: one entry, count 3."""
    sem = asyncio.BoundedSemaphore(3) if bounded else asyncio.Semaphore(3)

    async def holder(done: asyncio.Event) -> None:
        async with sem:
            while not done.is_set(): await asyncio.sleep(0.01)  # pin: asem  # noqa: E701

    async def scenario(done: asyncio.Event) -> list[asyncio.Task[Any]]:
        return _start(*((f"upstream-{i}", holder(done)) for i in range(3)))

    async def waiter() -> None:
        async with sem:
            pass

    doc, txt = stall_dump(dump_dir, scenario, waiter)
    kind = "asyncio.BoundedSemaphore" if bounded else "asyncio.Semaphore"
    h = assert_holder(doc, txt, "task", "upstream-0", pin(__file__, "asem"), on=kind, count=3)
    assert sorted(h["names"]) == ["upstream-0", "upstream-1", "upstream-2"]
    assert "and 2 more" in cause(txt)


def test_asyncio_condition_held(dump_dir: Path) -> None:
    """`async with cond:` waits for the condition's lock, held inside `async with cond:`."""
    cond = asyncio.Condition()

    async def holder(done: asyncio.Event) -> None:
        async with cond:
            while not done.is_set(): await asyncio.sleep(0.01)  # pin: acond  # noqa: E701

    async def scenario(done: asyncio.Event) -> list[asyncio.Task[Any]]:
        return _start(("cond-holder", holder(done)))

    async def waiter() -> None:
        async with cond:
            pass

    doc, txt = stall_dump(dump_dir, scenario, waiter)
    assert_holder(doc, txt, "task", "cond-holder", pin(__file__, "acond"),
                  on="asyncio.Condition")


def test_asyncio_event_names_the_setter(dump_dir: Path) -> None:
    """await ev.wait(): the task whose function calls ev.set()."""
    ev = asyncio.Event()

    async def setter(done: asyncio.Event) -> None:
        while not done.is_set(): await asyncio.sleep(0.01)  # pin: aset  # noqa: E701
        ev.set()

    async def scenario(done: asyncio.Event) -> list[asyncio.Task[Any]]:
        return _start(("setter", setter(done)))

    async def waiter() -> None:
        await ev.wait()

    doc, txt = stall_dump(dump_dir, scenario, waiter)
    assert_holder(doc, txt, "task", "setter", pin(__file__, "aset"), on="asyncio.Event",
                  certain=False)


def test_asyncio_queue_names_the_producer(dump_dir: Path) -> None:
    """await q.get(): the task that calls q.put_nowait() on the same queue."""
    q: asyncio.Queue[int] = asyncio.Queue()

    async def producer(done: asyncio.Event) -> None:
        while not done.is_set(): await asyncio.sleep(0.01)  # pin: aput  # noqa: E701
        q.put_nowait(1)

    async def scenario(done: asyncio.Event) -> list[asyncio.Task[Any]]:
        return _start(("producer", producer(done)))

    async def waiter() -> None:
        await q.get()

    doc, txt = stall_dump(dump_dir, scenario, waiter)
    assert_holder(doc, txt, "task", "producer", pin(__file__, "aput"), on="asyncio.Queue")


def test_asyncio_future_names_the_completer(dump_dir: Path) -> None:
    """await fut: the task that calls fut.set_result() on it."""
    box: list[asyncio.Future[int]] = []

    async def completer(done: asyncio.Event) -> None:
        fut = box[0]
        while not done.is_set(): await asyncio.sleep(0.01)  # pin: afut  # noqa: E701
        fut.set_result(1)

    async def scenario(done: asyncio.Event) -> list[asyncio.Task[Any]]:
        box.append(asyncio.get_running_loop().create_future())
        return _start(("completer", completer(done)))

    async def waiter() -> None:
        await box[0]

    doc, txt = stall_dump(dump_dir, scenario, waiter)
    assert_holder(doc, txt, "task", "completer", pin(__file__, "afut"), on="asyncio.Future")


async def _child(done: asyncio.Event) -> None:
    while not done.is_set(): await asyncio.sleep(0.01)  # pin: child  # noqa: E701


@pytest.mark.parametrize("how", ["await", "wait_for", "gather", "taskgroup"])
def test_awaited_tasks_are_holders(dump_dir: Path, how: str) -> None:
    """A task awaiting a task (directly, via wait_for, gather or a TaskGroup): the child."""
    if how == "taskgroup" and sys.version_info < (3, 11):
        pytest.skip("asyncio.TaskGroup is 3.11+")
    tasks: list[asyncio.Task[Any]] = []
    ev: list[asyncio.Event] = []

    async def scenario(done: asyncio.Event) -> list[asyncio.Task[Any]]:
        ev.append(done)
        if how != "taskgroup":
            tasks.extend(_start(("child", _child(done))))
        return tasks

    async def waiter() -> None:
        if how == "await":
            await tasks[0]
        elif how == "wait_for":
            await asyncio.wait_for(tasks[0], 30)
        elif how == "gather":
            await asyncio.gather(tasks[0])
        else:
            async with asyncio.TaskGroup() as tg:  # type: ignore[attr-defined]
                tg.create_task(_child(ev[0]), name="child")

    doc, txt = stall_dump(dump_dir, scenario, waiter)
    on = {"await": "asyncio.Task", "wait_for": "asyncio.Task", "gather": "asyncio.gather",
          "taskgroup": "asyncio.TaskGroup"}[how]
    assert_holder(doc, txt, "task", "child", pin(__file__, "child"), on=on, certain=True)


@pytest.mark.parametrize("loop_factory", LOOP_FACTORIES)
def test_run_in_executor_both_workers_busy(dump_dir: Path, loop_factory: LoopFactory) -> None:
    """run_in_executor queued behind a pool of 2 whose workers are both busy: both named."""
    pool = concurrent.futures.ThreadPoolExecutor(2, thread_name_prefix="db")
    stop = threading.Event()

    def busy() -> None:
        while not stop.is_set(): time.sleep(0.01)  # pin: busy  # noqa: E701

    async def scenario(done: asyncio.Event) -> list[asyncio.Task[Any]]:
        loop = asyncio.get_running_loop()
        jobs = [loop.run_in_executor(pool, busy) for _ in range(2)]

        async def stopper() -> None:
            await done.wait()
            stop.set()
            await asyncio.gather(*jobs)

        return _start(("stopper", stopper()))

    async def waiter() -> None:
        await asyncio.get_running_loop().run_in_executor(pool, time.sleep, 0)

    try:
        doc, txt = stall_dump(dump_dir, scenario, waiter, settle=0.1, loop_factory=loop_factory)
    finally:
        stop.set()
        pool.shutdown()
    link = doc["waits_for"][0]
    assert link["on"]["type"] == "executor"
    assert link["on"]["state"] == "queued behind busy workers"
    names = sorted(n for h in link["holders"] for n in h.get("names", [h["thread"]]))
    assert names == ["db_0", "db_1"]
    assert_holder(doc, txt, "thread", "db_0", pin(__file__, "busy"), on="executor",
                  certain=True)
    assert "queued behind thread" in cause(txt)


def test_two_task_deadlock(dump_dir: Path) -> None:
    """A holds L1 and awaits L2, B holds L2 and awaits L1: deadlock, both in the chain."""
    l1, l2 = asyncio.Lock(), asyncio.Lock()

    async def task_b(done: asyncio.Event) -> None:
        async with l2:
            await asyncio.sleep(0.1)
            async with l1:  # pin: b-waits
                pass

    async def scenario(done: asyncio.Event) -> list[asyncio.Task[Any]]:
        return _start(("B", task_b(done)))

    async def task_a() -> None:
        async with l1:
            await asyncio.sleep(0.05)
            async with l2:  # pin: a-waits
                pass

    doc, txt = stall_dump(dump_dir, scenario, task_a, waiter_name="A", cancel=True)
    assert doc["deadlock"] is True
    a_to_b, b_to_a = doc["waits_for"]
    assert (a_to_b["waiter"]["task"], a_to_b["on"]["name"]) == ("A", "l2")
    assert_frame_is(a_to_b["holders"][0]["frame"], pin(__file__, "b-waits"))
    assert (b_to_a["waiter"]["task"], b_to_a["on"]["name"]) == ("B", "l1")
    assert b_to_a["holders"][0]["task"] == "A"
    assert_frame_is(b_to_a["holders"][0]["frame"], pin(__file__, "a-waits"))
    assert cause(txt) == ("Cause:       DEADLOCK \u2014 task 'A' waits for asyncio.Lock l2 held "
                          "by task 'B', which waits for asyncio.Lock l1 held by task 'A'")
