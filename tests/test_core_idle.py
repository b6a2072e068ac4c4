"""An idle loop lets the watchdog sleep; leaving the selector wakes it."""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from pathlib import Path
from typing import Any

import uvloop
from conftest import only_dump
from core_support import assert_frame_is, pin, run_loop

import freezewatch
from freezewatch import _state


def test_idle_loop_parks_the_watchdog_and_a_freeze_from_idle_is_caught(
        dump_dir: Path, events: Any) -> None:
    """2 s idle at interval 0.05: a few watchdog rounds, not ~40; a later freeze is pinned."""

    async def main() -> tuple[int, float]:
        freezewatch.install(threshold=0.5, interval=0.05, dump_dir=str(dump_dir), native=False)
        await asyncio.sleep(0.5)
        wd = _state.watchdog
        assert wd is not None
        before = wd.rounds
        await asyncio.sleep(2.0)
        idle_rounds = wd.rounds - before
        t0 = time.monotonic()
        time.sleep(1.2)  # pin: from-idle
        await asyncio.sleep(0.2)
        return idle_rounds, t0

    idle_rounds, _ = asyncio.run(main())
    assert idle_rounds <= 16, f"{idle_rounds} rounds in 2 s idle: the watchdog did not park"
    events.wait("freeze_ended")
    doc = only_dump(dump_dir)
    assert_frame_is(doc["blocking_frame"], pin(__file__, "from-idle"))
    # Detected while frozen, well before the block ended (the wake-up was not lost).
    assert doc["blocked_for"] < 1.0


def test_idle_uvloop_parks_the_watchdog_and_a_freeze_from_idle_is_caught(
        dump_dir: Path, events: Any) -> None:
    """uvloop has no Python selector: the watchdog reads the loop thread's epoll wait
    from /proc and parks on it (a few rounds in 2 s, not ~40). The loop's own timer
    ends the park: a freeze that starts from idle is pinned while it lasts."""

    async def main() -> int:
        freezewatch.install(threshold=0.5, interval=0.05, dump_dir=str(dump_dir), native=False)
        await asyncio.sleep(0.5)
        wd = _state.watchdog
        assert wd is not None
        before = wd.rounds
        await asyncio.sleep(2.0)  # idle: epoll_pwait with a 2 s timeout, then the timer
        idle_rounds = wd.rounds - before
        time.sleep(1.2)  # pin: uvloop-from-idle
        await asyncio.sleep(0.2)
        return idle_rounds

    idle_rounds = run_loop(uvloop.new_event_loop, main)
    assert idle_rounds <= 16, f"{idle_rounds} rounds in 2 s idle: the watchdog did not park"
    events.wait("freeze_ended")
    doc = only_dump(dump_dir)
    assert_frame_is(doc["blocking_frame"], pin(__file__, "uvloop-from-idle"))
    assert doc["blocked_for"] < 1.0


def test_idle_uvloop_woken_by_io_wakes_the_parked_watchdog(dump_dir: Path, events: Any) -> None:
    """A parked watchdog on an idle uvloop loop (no timer) is woken by the loop's I/O:
    a blocking call right after a datagram arrives is caught while it lasts."""

    async def main() -> None:
        loop = asyncio.get_running_loop()
        got = asyncio.Event()

        class Proto(asyncio.DatagramProtocol):
            def datagram_received(self, data: bytes, addr: Any) -> None:
                got.set()
                time.sleep(1.2)  # pin: uvloop-io-freeze

        tr, _ = await loop.create_datagram_endpoint(Proto, local_addr=("127.0.0.1", 0))
        port = tr.get_extra_info("sockname")[1]
        freezewatch.install(threshold=0.5, interval=0.05, dump_dir=str(dump_dir), native=False)
        await asyncio.sleep(0.3)
        wd = _state.watchdog
        assert wd is not None

        def send() -> None:
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
                time.sleep(1.5)  # the watchdog parks meanwhile (no timer: no timeout)
                s.sendto(b"x", ("127.0.0.1", port))

        threading.Thread(target=send, daemon=True).start()
        await got.wait()  # a future no timer completes: the loop waits for I/O only
        await asyncio.sleep(0.3)  # the freeze's end: the beat answered
        tr.close()

    run_loop(uvloop.new_event_loop, main)
    events.wait("freeze_ended")
    doc = only_dump(dump_dir)
    assert_frame_is(doc["blocking_frame"], pin(__file__, "uvloop-io-freeze"))
    assert doc["blocked_for"] < 1.0


async def _spin_tasks(n: int) -> None:
    for _ in range(n):
        await asyncio.sleep(0)


def test_saturated_loop_does_not_starve_the_watchdog(dump_dir: Path) -> None:
    """A loop at 100 % (select(0) every iteration) still lets the watchdog run every interval."""

    async def main() -> tuple[int, float]:
        freezewatch.install(threshold=1.0, interval=0.05, dump_dir=str(dump_dir), native=False)
        await asyncio.sleep(0.3)
        wd = _state.watchdog
        assert wd is not None
        before, t0 = wd.rounds, time.monotonic()
        end = t0 + 2.0
        while time.monotonic() < end:
            await asyncio.gather(*(_spin_tasks(50) for _ in range(100)))
        return wd.rounds - before, time.monotonic() - t0

    rounds, seconds = asyncio.run(main())
    # Every 0.05 s would be ~40 in 2 s; a GIL convoy left it 2-4 rounds a second.
    assert rounds >= 0.4 * seconds / 0.05, f"{rounds} watchdog rounds in {seconds:.1f} s"


def test_uninstall_gives_the_loop_its_own_selector_back(dump_dir: Path) -> None:
    """While watched, the selector is wrapped; after uninstall() it is the loop's own again."""

    async def main() -> tuple[str, str, str]:
        loop = asyncio.get_running_loop()
        own = type(loop._selector).__name__  # type: ignore[attr-defined]
        freezewatch.install(threshold=0.5, interval=0.05, dump_dir=str(dump_dir), native=False)
        await asyncio.sleep(0.3)
        watched = type(loop._selector).__name__  # type: ignore[attr-defined]
        freezewatch.uninstall()
        return own, watched, type(loop._selector).__name__  # type: ignore[attr-defined]

    own, watched, after = asyncio.run(main())
    assert watched == "WakingSelector" != own
    assert after == own
