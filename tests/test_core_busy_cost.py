"""A busy loop keeps the watchdog at one round per interval (no park/wake churn)."""

from __future__ import annotations

import asyncio
import threading
import time
from pathlib import Path
from typing import Any

from conftest import only_dump
from core_support import assert_frame_is, pin

import freezewatch
from freezewatch import _state
from freezewatch._loopwait import Wakeup


async def _ticker(stop: float) -> None:
    # A loop that is busy yet sits in select() most of the time (like a server
    # between requests): select() with a timeout, hundreds of returns a second.
    while time.monotonic() < stop:
        await asyncio.sleep(0.001)


def test_busy_loop_neither_wakes_the_watchdog_nor_hides_a_freeze(
        dump_dir: Path, events: Any) -> None:
    """A loop leaving select() ~500 times/s: ~1 round/interval, no wake-ups; a freeze is pinned."""

    async def main() -> tuple[int, int, float]:
        freezewatch.install(threshold=0.5, interval=0.1, dump_dir=str(dump_dir), native=False)
        await asyncio.sleep(0.5)
        wd = _state.watchdog
        assert wd is not None
        (w,) = wd.watches
        assert w.idle is not None, "the selector wrapper is in place"
        rounds0, wakes0, t0 = wd.rounds, w.idle.wakes, time.monotonic()
        busy = asyncio.ensure_future(_ticker(t0 + 3.5))
        await asyncio.sleep(2.0)
        rounds, wakes, seconds = wd.rounds - rounds0, w.idle.wakes - wakes0, time.monotonic() - t0
        time.sleep(1.2)  # pin: busy-freeze
        await busy
        return rounds, wakes, seconds

    rounds, wakes, seconds = asyncio.run(main())
    # Before: the watchdog parked whenever it found the loop inside select(),
    # and the loop woke it a millisecond later: hundreds of rounds.
    assert rounds <= 1.5 * seconds / 0.1 + 3, f"{rounds} watchdog rounds in {seconds:.1f} s"
    assert wakes <= 2, f"the busy loop woke the parked watchdog {wakes} times"
    events.wait("freeze_ended")
    doc = only_dump(dump_dir)
    assert_frame_is(doc["blocking_frame"], pin(__file__, "busy-freeze"))
    assert doc["blocked_for"] < 1.2  # caught while frozen


def test_wakeup_flag_wakes_a_sleeping_watchdog_early_and_times_out_otherwise() -> None:
    """The watchdog's wake-up flag: set() before or during wait() ends it early, else a timeout."""
    flag = Wakeup()
    t0 = time.monotonic()
    assert flag.wait(0.2) is False
    assert time.monotonic() - t0 >= 0.15
    flag.set()
    flag.set()  # twice (two loops waking it at once): no error, still one wake-up
    assert flag.wait(5.0) is True  # already set: returns at once
    threading.Timer(0.1, flag.set).start()  # another thread, as a loop thread does
    t0 = time.monotonic()
    assert flag.wait(10.0) is True
    assert time.monotonic() - t0 < 5.0
    flag.set()
    flag.clear()
    assert flag.wait(0.05) is False

