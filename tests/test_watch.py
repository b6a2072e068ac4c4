"""watch(): units of work in dumps, stall dumps, wait ages, task context, loops in threads."""

from __future__ import annotations

import asyncio
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest
import structlog
from conftest import assert_contract, dumps, only_dump
from core_support import pin

import freezewatch
from freezewatch._snapshot.waits import WaitSampler

FAST = {"threshold": 0.3, "interval": 0.05, "native": False}


def run(coro: Any, loop_kind: str = "asyncio") -> Any:
    """asyncio.run(coro) on a fresh loop of the given kind ("asyncio" or "uvloop")."""
    if loop_kind == "asyncio":
        return asyncio.run(coro)
    uvloop = pytest.importorskip("uvloop")
    loop = uvloop.new_event_loop()
    try:
        return loop.run_until_complete(coro)
    finally:
        loop.close()


def test_watch_finishing_in_time_writes_no_dump(dump_dir: Path, events: Any) -> None:
    """A watch() that ends before stall_after gives no dump and no stall event."""

    async def main() -> freezewatch.LoopWatch:
        handle = freezewatch.install(dump_dir=str(dump_dir), **FAST)
        for _ in range(5):
            async with freezewatch.watch("quick", stall_after=0.6):
                await asyncio.sleep(0.2)
        assert handle.inflight == {}
        await asyncio.sleep(0.8)  # several stall scans with nothing open
        return handle

    handle = asyncio.run(main())
    assert dumps(dump_dir, kind="*") == []
    assert events.named("stall_detected") == []
    assert handle.stalls == 0


@pytest.mark.parametrize("loop_kind", ["asyncio", "uvloop"])
def test_overdue_watch_writes_one_stall_dump_with_await_chain(dump_dir: Path, events: Any,
                                                               loop_kind: str) -> None:
    """An overdue watch() gives one stall dump pinned to the app's await line, then stall_ended."""

    async def reconcile(gate: asyncio.Event) -> None:
        async with freezewatch.watch("reconcile", stall_after=0.5):
            await asyncio.wait_for(gate.wait(), 30)  # pin: stall-await

    async def main() -> freezewatch.LoopWatch:
        handle = freezewatch.install(dump_dir=str(dump_dir), **FAST)
        gate = asyncio.Event()
        task = asyncio.create_task(reconcile(gate), name="reconcile-task")
        while not handle.stalls:
            await asyncio.sleep(0.05)
        await asyncio.sleep(0.8)  # still stalled: no second dump for the same unit
        gate.set()
        await task
        return handle

    handle = run(main(), loop_kind)
    (path,) = dumps(dump_dir, kind="stall")
    doc = assert_contract(path)
    line = pin(__file__, "stall-await").line
    assert doc["kind"] == "stall"
    assert doc["stalled"]["name"] == "reconcile"
    assert doc["stalled"]["task"] == "reconcile-task"
    assert doc["app_frame"]["file"] == __file__ and doc["app_frame"]["line"] == line
    chain = doc["await_chain"]
    assert any(f["file"] == __file__ and f["line"] == line for f in chain)
    assert doc["blocking_frame"] == chain[-1]  # the deepest frame of the chain
    assert doc["blocked_for"] >= 0.5
    assert handle.stalls == 1
    detected = events.wait("stall_detected")
    assert detected["dump_path"] == str(path)
    ended = events.wait("stall_ended")
    assert ended["seconds"] >= 1.0


def test_open_watch_is_listed_in_freeze_dump(dump_dir: Path, events: Any) -> None:
    """A freeze inside a @watch-decorated coroutine lists that unit as the request."""

    @freezewatch.watch("nightly-report", stall_after=60)
    async def nightly_report() -> None:
        await asyncio.sleep(0.2)
        time.sleep(1.0)  # pin: freeze-in-watch

    async def main() -> None:
        freezewatch.install(dump_dir=str(dump_dir), **FAST)
        await asyncio.sleep(0.1)
        await asyncio.create_task(nightly_report(), name="report-task")
        await asyncio.sleep(0.3)

    asyncio.run(main())
    events.wait("freeze_ended")
    doc = only_dump(dump_dir)
    assert doc["blocking_frame"]["line"] == pin(__file__, "freeze-in-watch").line
    (unit,) = doc["inflight"]
    assert unit["name"] == "nightly-report" and unit["kind"] == "watch"
    assert unit["task"] == "report-task" and unit["in_blocking_task"] is True
    assert unit["age"] >= 0.5
    assert doc["request"]["name"] == "nightly-report"


def test_watch_without_watched_loop_is_a_noop() -> None:
    """watch() where no loop is watched does nothing and raises nothing."""

    async def main() -> str:
        async with freezewatch.watch("x", stall_after=1):
            return "ran"

    assert asyncio.run(main()) == "ran"
    with pytest.raises(ValueError, match="stall_after must be > 0, got 0"):
        freezewatch.watch("x", stall_after=0)


def test_dump_carries_structlog_context_of_blocking_task(dump_dir: Path, events: Any) -> None:
    """Python >= 3.12: the allow-listed structlog contextvars of the blocking task are in
    the dump (others are not); absent before."""

    async def handler() -> None:
        structlog.contextvars.bind_contextvars(request_id="req-42", user="ann", api_key="k-1")
        await asyncio.sleep(0.1)
        time.sleep(0.8)

    async def main() -> None:
        freezewatch.install(dump_dir=str(dump_dir), contextvars=("request_id", "user"), **FAST)
        structlog.contextvars.bind_contextvars(request_id="main-not-this")
        await asyncio.sleep(0.1)
        await asyncio.create_task(handler())
        await asyncio.sleep(0.3)

    asyncio.run(main())
    events.wait("freeze_ended")
    doc = only_dump(dump_dir)
    if sys.version_info >= (3, 12):
        assert doc["context"] == {"request_id": "req-42", "user": "ann"}
    else:
        assert "context" not in doc


def test_wait_ages_per_task_group(dump_dir: Path, events: Any) -> None:
    """Tasks parked on one future show 'waiting >= N s'; a task that keeps moving shows none."""

    async def parked(gate: asyncio.Event) -> None:
        await gate.wait()  # pin: parked

    async def busy() -> None:
        while True:
            await asyncio.sleep(0.02)  # new future every turn, often at the same address

    async def main() -> None:
        freezewatch.install(dump_dir=str(dump_dir), **FAST)
        gate = asyncio.Event()
        tasks = [asyncio.create_task(parked(gate), name=f"parked-{i}") for i in range(20)]
        mover = asyncio.create_task(busy(), name="mover")
        await asyncio.sleep(2.6)  # the sampler runs about once a second
        time.sleep(0.8)
        await asyncio.sleep(0.2)
        gate.set()
        mover.cancel()
        await asyncio.gather(*tasks)

    asyncio.run(main())
    events.wait("freeze_ended")
    (path,) = dumps(dump_dir)
    doc = assert_contract(path)
    (group,) = [g for g in doc["tasks"] if g["coroutine"].endswith("parked")]
    assert group["count"] == 20
    assert group["await_chain"][0]["line"] == pin(__file__, "parked").line
    assert group["waiting"] >= 1.0  # first seen by a sample >= 1 s before the freeze
    assert group["waiting_longest"] >= group["waiting"]
    (moving,) = [g for g in doc["tasks"] if g["names"] == ["mover"]]
    assert moving["waiting"] is None
    assert "waiting \u2265" in Path(str(path)[:-5] + ".txt").read_text()


def test_wait_sampler_cost_is_bounded() -> None:
    """The sampler schedules its next pass so that it uses at most MAX_DUTY of the time."""
    from freezewatch._snapshot import waits

    async def main() -> tuple[float, float]:
        gate = asyncio.Event()
        tasks = [asyncio.create_task(gate.wait()) for _ in range(5000)]
        await asyncio.sleep(0)
        sampler = WaitSampler()
        delay = sampler.sample(asyncio.get_running_loop(), time.monotonic())
        assert sampler.tasks_seen == 5001
        assert len(sampler.table) == 5000  # every parked task; the running main() is not waiting
        gate.set()
        await asyncio.gather(*tasks)
        return delay, sampler.last_cost

    delay, cost = asyncio.run(main())
    assert delay >= waits.SAMPLE_EVERY
    assert delay >= cost / waits.MAX_DUTY * 0.999


@pytest.mark.parametrize("loop_kind", ["asyncio", "uvloop"])
def test_frozen_loop_in_thread_reported_alone(dump_dir: Path, events: Any,
                                              loop_kind: str) -> None:
    """A loop frozen in a background thread is reported by its thread; the healthy main is not."""
    new_loop: Any = asyncio.new_event_loop
    if loop_kind == "uvloop":
        uvloop = pytest.importorskip("uvloop")
        new_loop = uvloop.new_event_loop
    bg_loop = new_loop()
    bg_ready = threading.Event()
    bg_handle: list[freezewatch.LoopWatch] = []

    async def bg_main() -> None:
        bg_handle.append(freezewatch.install(dump_dir=str(dump_dir), **FAST))
        bg_ready.set()
        await asyncio.sleep(0.3)
        async with freezewatch.watch("telegram-poll"):
            time.sleep(1.0)  # pin: freeze-bg-thread
        await asyncio.sleep(0.4)

    thread = threading.Thread(target=bg_loop.run_until_complete, args=(bg_main(),),
                              name="telegram-client")

    async def main() -> freezewatch.LoopWatch:
        handle = freezewatch.install(dump_dir=str(dump_dir), **FAST)
        thread.start()
        bg_ready.wait(5)
        for _ in range(40):  # stays healthy throughout
            await asyncio.sleep(0.05)
        await asyncio.to_thread(thread.join, 10)
        return handle

    main_handle = asyncio.run(main())
    bg_loop.close()
    events.wait("freeze_ended")
    doc = only_dump(dump_dir, kind="*")
    assert doc["loop"]["thread_name"] == "telegram-client"
    assert doc["loop"]["name"] == "telegram-client"
    assert doc["blocking_frame"]["line"] == pin(__file__, "freeze-bg-thread").line
    assert [u["name"] for u in doc["inflight"]] == ["telegram-poll"]
    assert main_handle.freezes == 0 and bg_handle[0].freezes == 1
    assert [e["loop"] for e in events.named("freeze_detected")] == ["telegram-client"]


def test_inflight_list_is_bounded_but_keeps_the_blocking_unit(dump_dir: Path,
                                                              events: Any) -> None:
    """600 open units: the dump lists 500 plus the blocking task's unit and an 'omitted' marker."""
    from freezewatch._inflight import MAX_RECORDS

    async def parked(gate: asyncio.Event, i: int) -> None:
        async with freezewatch.watch(f"job-{i}", stall_after=60):
            await gate.wait()

    async def blocker() -> None:
        async with freezewatch.watch("the-blocker", stall_after=60):
            time.sleep(0.8)

    async def main() -> None:
        freezewatch.install(dump_dir=str(dump_dir), **FAST)
        gate = asyncio.Event()
        tasks = [asyncio.create_task(parked(gate, i)) for i in range(600)]
        await asyncio.sleep(0.1)
        await asyncio.create_task(blocker(), name="blocker")
        await asyncio.sleep(0.3)
        gate.set()
        await asyncio.gather(*tasks)

    asyncio.run(main())
    events.wait("freeze_ended")
    (path,) = dumps(dump_dir)
    doc = assert_contract(path)
    units = doc["inflight"]
    assert len(units) == MAX_RECORDS + 2
    assert units[0]["name"] == "job-0"
    assert units[-2]["name"] == "the-blocker" and units[-2]["in_blocking_task"] is True
    assert units[-1]["kind"] == "omitted" and units[-1]["name"].startswith("(100 more units")
    assert doc["request"]["name"] == "the-blocker"
    assert "more in the .json" in Path(str(path)[:-5] + ".txt").read_text()
