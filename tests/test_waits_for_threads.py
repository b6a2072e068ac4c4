"""The wait-for graph of real freezes: the loop thread blocked on a threading primitive
held by a named thread, each holder pinned to its line in this file."""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import queue
import threading
import time
from pathlib import Path

import pytest
from core_support import LOOP_FACTORIES, LoopFactory, assert_frame_is, pin, release_when_dumped
from waits_support import assert_holder, cause, freeze_dump

pytestmark = pytest.mark.timeout(30)


class Breaker:
    """A circuit breaker whose health probe holds the state lock during slow I/O."""

    def __init__(self) -> None:
        self._state_lock = threading.Lock()

    def check(self, ready: threading.Event, done: threading.Event) -> None:
        with self._state_lock:
            ready.set()
            while not done.is_set(): time.sleep(0.01)  # pin: breaker-holder  # noqa: E701

    def allow(self) -> bool:
        with self._state_lock:  # pin: breaker-waiter
            return True


@pytest.mark.parametrize("loop_factory", LOOP_FACTORIES)
def test_lock_held_by_named_thread(dump_dir: Path, loop_factory: LoopFactory) -> None:
    """threading.Lock: the holder is inferred from its `with` block, certain false."""
    breaker = Breaker()
    doc, txt = freeze_dump(dump_dir, breaker.allow, [("health-check", breaker.check)],
                           loop_factory)
    link = doc["waits_for"][0]
    assert link["waiter"]["thread"] == doc["loop"]["thread_name"]
    assert_frame_is(link["waiter"]["frame"], pin(__file__, "breaker-waiter"))
    assert link["on"]["name"] == "Breaker._state_lock"
    assert link["on"]["id"].startswith("0x")
    holder = assert_holder(doc, txt, "thread", "health-check", pin(__file__, "breaker-holder"),
                           on="threading.Lock", certain=False)
    assert holder["why"].startswith("inside `with self._state_lock:`")
    assert doc["deadlock"] is False
    assert cause(txt).startswith("Cause:       lock wait \u2014 threading.Lock "
                                 "Breaker._state_lock held by thread 'health-check', at ")
    assert "Waits for (the blocked party first" in txt


def test_lock_acquire_call_and_spin_on_locked(dump_dir: Path) -> None:
    """`lock.acquire(timeout=...)` is a wait on the lock; a loop that only polls
    `lock.locked()` is not waiting for it (no waits_for)."""
    lock = threading.Lock()

    def hold(ready: threading.Event, done: threading.Event) -> None:
        with lock:
            ready.set()
            while not done.is_set(): time.sleep(0.01)  # pin: acquire-holder  # noqa: E701

    def block() -> None:
        if lock.acquire(timeout=5):  # pin: acquire-waiter
            lock.release()

    doc, txt = freeze_dump(dump_dir, block, [("acquire-holder", hold)])
    assert_frame_is(doc["waits_for"][0]["waiter"]["frame"], pin(__file__, "acquire-waiter"))
    assert_holder(doc, txt, "thread", "acquire-holder", pin(__file__, "acquire-holder"),
                  on="threading.Lock")


def test_polling_a_held_lock_is_no_wait(dump_dir: Path) -> None:
    """A CPU-bound loop on a line that mentions a held lock does not wait for it."""
    lock = threading.Lock()

    def hold(ready: threading.Event, done: threading.Event) -> None:
        with lock:
            ready.set()
            while not done.is_set(): time.sleep(0.01)  # noqa: E701

    def block() -> None:
        while lock.locked(): pass  # noqa: E701

    doc, txt = freeze_dump(dump_dir, block, [("poll-holder", hold)])
    assert "waits_for" not in doc
    assert "held by" not in cause(txt)


def test_rlock_owner_is_certain(dump_dir: Path) -> None:
    """threading.RLock knows its owner: certain true."""
    rlock = threading.RLock()

    def hold(ready: threading.Event, done: threading.Event) -> None:
        with rlock:
            ready.set()
            while not done.is_set(): time.sleep(0.01)  # pin: rlock-holder  # noqa: E701

    def block() -> None:
        with rlock:
            pass

    doc, txt = freeze_dump(dump_dir, block, [("rlock-owner", hold)])
    assert_holder(doc, txt, "thread", "rlock-owner", pin(__file__, "rlock-holder"),
                  on="threading.RLock", certain=True)


def test_condition_enter_waits_for_its_lock(dump_dir: Path) -> None:
    """`with cond:` waits for the condition's RLock: its owner holds it."""
    cond = threading.Condition()

    def hold(ready: threading.Event, done: threading.Event) -> None:
        with cond:
            ready.set()
            while not done.is_set(): time.sleep(0.01)  # pin: cond-holder  # noqa: E701

    def block() -> None:
        with cond:
            pass

    doc, txt = freeze_dump(dump_dir, block, [("cond-holder", hold)])
    assert_holder(doc, txt, "thread", "cond-holder", pin(__file__, "cond-holder"),
                  on="threading.Condition", certain=True)


def test_condition_wait_names_the_notifier(dump_dir: Path) -> None:
    """cond.wait(): whoever calls cond.notify() on it may end the wait."""
    cond = threading.Condition()

    def notifier(ready: threading.Event, done: threading.Event) -> None:
        ready.set()
        while not done.is_set(): time.sleep(0.01)  # pin: notifier  # noqa: E701
        with cond:
            cond.notify_all()

    def block() -> None:
        with cond:
            cond.wait(5)

    doc, txt = freeze_dump(dump_dir, block, [("notifier", notifier)])
    assert_holder(doc, txt, "thread", "notifier", pin(__file__, "notifier"),
                  on="threading.Condition", certain=False)


@pytest.mark.parametrize("bounded", [False, True])
def test_semaphore_holders_grouped(dump_dir: Path, bounded: bool) -> None:
    """A Semaphore(2) held by two threads at one line: one holder entry, count 2."""
    sem = threading.BoundedSemaphore(2) if bounded else threading.Semaphore(2)

    def hold(ready: threading.Event, done: threading.Event) -> None:
        with sem:
            ready.set()
            while not done.is_set(): time.sleep(0.01)  # pin: sem-holder  # noqa: E701

    def block() -> None:
        with sem:
            pass

    doc, txt = freeze_dump(dump_dir, block, [("sem-a", hold), ("sem-b", hold)])
    kind = "threading.BoundedSemaphore" if bounded else "threading.Semaphore"
    holder = assert_holder(doc, txt, "thread", "sem-a", pin(__file__, "sem-holder"), on=kind,
                           count=2)
    assert sorted(holder["names"]) == ["sem-a", "sem-b"]
    assert doc["waits_for"][0]["on"]["state"] == "value 0"
    assert "thread 'sem-a' and 1 more" in cause(txt) or "thread 'sem-b' and 1 more" in cause(txt)


def test_event_names_the_setter(dump_dir: Path) -> None:
    """ev.wait(): the thread whose function calls ev.set() is named (certain false)."""
    ev = threading.Event()

    def setter(ready: threading.Event, done: threading.Event) -> None:
        ready.set()
        while not done.is_set(): time.sleep(0.01)  # pin: setter  # noqa: E701
        ev.set()

    doc, txt = freeze_dump(dump_dir, lambda: ev.wait(5), [("setter", setter)])
    holder = assert_holder(doc, txt, "thread", "setter", pin(__file__, "setter"),
                           on="threading.Event", certain=False)
    assert holder["why"].startswith("its function calls .set()")


def test_queue_get_names_the_producer(dump_dir: Path) -> None:
    """q.get(): the thread that calls q.put() on the same queue."""
    q: queue.Queue[int] = queue.Queue()

    def producer(ready: threading.Event, done: threading.Event) -> None:
        ready.set()
        while not done.is_set(): time.sleep(0.01)  # pin: producer  # noqa: E701
        q.put(1)

    doc, txt = freeze_dump(dump_dir, lambda: q.get(timeout=5), [("producer", producer)])
    assert_holder(doc, txt, "thread", "producer", pin(__file__, "producer"), on="queue.Queue")


def test_thread_join_names_the_thread(dump_dir: Path) -> None:
    """t.join(): the joined thread itself, where it is now (certain)."""
    box: list[threading.Thread] = []

    def worker(ready: threading.Event, done: threading.Event) -> None:
        box.append(threading.current_thread())
        ready.set()
        while not done.is_set(): time.sleep(0.01)  # pin: joined  # noqa: E701

    doc, txt = freeze_dump(dump_dir, lambda: box[0].join(5), [("joined", worker)])
    assert_holder(doc, txt, "thread", "joined", pin(__file__, "joined"),
                  on="threading.Thread", certain=True)


def test_future_result_names_the_worker(dump_dir: Path) -> None:
    """concurrent.futures.Future.result(): the pool worker running the job."""
    pool = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="pool")
    done = threading.Event()
    started = threading.Event()

    def job() -> None:
        started.set()
        while not done.is_set(): time.sleep(0.01)  # pin: job  # noqa: E701

    fut = pool.submit(job)
    assert started.wait(5)

    def release(ready: threading.Event, stop: threading.Event) -> None:
        ready.set()
        stop.wait(15)
        done.set()

    try:
        doc, txt = freeze_dump(dump_dir, lambda: fut.result(5), [("releaser", release)])
    finally:
        done.set()
        pool.shutdown()
    assert_holder(doc, txt, "thread", "pool_0", pin(__file__, "job"),
                  on="concurrent.futures.Future", certain=True)


def test_released_lock_is_not_blamed(dump_dir: Path) -> None:
    """A thread that held the lock earlier and released it is not a holder; the one that
    holds it now (with .acquire(), no `with`) cannot be inferred: holders_unknown."""
    lock = threading.Lock()

    def early(ready: threading.Event, done: threading.Event) -> None:
        with lock:
            pass
        ready.set()
        while not done.is_set(): time.sleep(0.01)  # noqa: E701

    def manual(ready: threading.Event, done: threading.Event) -> None:
        lock.acquire()
        ready.set()
        while not done.is_set(): time.sleep(0.01)  # noqa: E701
        lock.release()

    def block() -> None:
        with lock:
            pass

    doc, txt = freeze_dump(dump_dir, block, [("early", early), ("manual", manual)])
    (link,) = doc["waits_for"]
    assert link["holders"] == []
    assert "no thread or task is inside a with block" in link["holders_unknown"]
    assert "early" not in cause(txt)
    assert "holder unknown" in cause(txt)


@pytest.mark.parametrize("loop_factory", LOOP_FACTORIES)
def test_self_deadlock_run_coroutine_threadsafe(dump_dir: Path, loop_factory: LoopFactory
                                                ) -> None:
    """A sync call on the loop thread waits for run_coroutine_threadsafe(coro, <own loop>)."""

    async def answer() -> int:
        return 42

    def block() -> None:
        loop = asyncio.get_running_loop()
        fut = asyncio.run_coroutine_threadsafe(answer(), loop)
        with contextlib.suppress(concurrent.futures.TimeoutError):
            fut.result(1.5)  # pin: self-deadlock

    doc, txt = freeze_dump(dump_dir, block, [], loop_factory)
    assert doc["deadlock"] is True
    (link,) = doc["waits_for"]
    assert link["on"]["type"] == "concurrent.futures.Future"
    assert_frame_is(link["waiter"]["frame"], pin(__file__, "self-deadlock"))
    assert link["holders"][0]["thread"] == doc["loop"]["thread_name"]
    assert cause(txt).startswith("Cause:       DEADLOCK \u2014 the loop thread waits for a "
                                 "future that only this loop can complete")


def test_thread_holding_the_lock_waits_for_the_frozen_loop(dump_dir: Path) -> None:
    """The loop waits for a lock whose holder waits, via run_coroutine_threadsafe, for
    the loop: a two-hop deadlock with both parties named."""
    lock = threading.Lock()
    box: list[concurrent.futures.Future[None]] = []

    async def ping() -> None:
        return None

    def hold(loop: asyncio.AbstractEventLoop, ready: threading.Event) -> None:
        with lock:
            box.append(asyncio.run_coroutine_threadsafe(ping(), loop))
            ready.set()
            with contextlib.suppress(concurrent.futures.CancelledError):
                box[0].result(10)  # pin: cross-wait

    def block() -> None:
        ready = threading.Event()
        t = threading.Thread(target=hold, args=(asyncio.get_running_loop(), ready),
                             name="cross-holder", daemon=True)
        t.start()
        assert ready.wait(5)
        release_when_dumped(dump_dir, box[0].cancel)  # the only way out of this deadlock
        with lock:  # pin: cross-loop-wait
            pass
        t.join(5)

    doc, txt = freeze_dump(dump_dir, block, [])
    assert doc["deadlock"] is True
    to_holder, to_loop = doc["waits_for"]
    assert_frame_is(to_holder["waiter"]["frame"], pin(__file__, "cross-loop-wait"))
    assert to_holder["holders"][0]["thread"] == "cross-holder"
    assert_frame_is(to_holder["holders"][0]["frame"], pin(__file__, "cross-wait"))
    assert to_loop["waiter"]["thread"] == "cross-holder"
    assert to_loop["holders"][0]["thread"] == doc["loop"]["thread_name"]
    loop = doc["loop"]["thread_name"]
    assert cause(txt) == (
        f"Cause:       DEADLOCK \u2014 thread {loop!r} waits for threading.Lock lock held by "
        f"thread 'cross-holder', which waits for concurrent.futures.Future run by thread {loop!r}")
