"""How a freeze ends: its exact duration, and an end recorded however watching stops.

Real loops, really blocked: the duration counts from when the loop last ran
(its last selector return), not from the heartbeat's send, which may go out
up to an interval after the block began; a freeze that ends just before
``asyncio.run()`` returns, or when the process exits, still gets its
``freeze_ended`` and the ``duration`` in its dump.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

from conftest import assert_contract, dumps, only_dump, wait_for
from core_support import assert_frame_is, pin

import freezewatch

BLOCK = 0.6


def test_duration_counts_from_when_the_loop_last_ran(dump_dir: Path, events: Any) -> None:
    """time.sleep(0.6) on a busy loop: 0.6 s, not 0.5-0.6 s (the watchdog polls a busy
    loop every interval, so the beat went out up to 0.1 s after the block began)."""

    async def main() -> None:
        freezewatch.install(threshold=0.3, interval=0.1, dump_dir=str(dump_dir), native=False)
        for _ in range(45):  # busy enough not to park the watchdog: beats every interval
            await asyncio.sleep(0.01)
        time.sleep(BLOCK)  # pin: exact
        await asyncio.sleep(0.3)

    asyncio.run(main())
    ended = events.wait("freeze_ended")
    doc = wait_for(lambda: (d := only_dump(dump_dir)).get("duration") and d)
    assert_frame_is(doc["blocking_frame"], pin(__file__, "exact"))
    assert BLOCK <= doc["duration"] < BLOCK + 0.1, doc["duration"]
    assert ended["duration"] == round(doc["duration"], 3)


def test_freeze_ending_right_before_run_returns_gets_its_end(dump_dir: Path,
                                                             events: Any) -> None:
    """The block is main()'s last statement: the loop runs the beat and closes at once."""

    async def main() -> None:
        freezewatch.install(threshold=0.3, interval=0.05, dump_dir=str(dump_dir), native=False)
        await asyncio.sleep(0.2)
        time.sleep(BLOCK)  # pin: last

    asyncio.run(main())
    ended = events.wait("freeze_ended")
    doc = wait_for(lambda: (d := only_dump(dump_dir)).get("duration") and d)
    assert_frame_is(doc["blocking_frame"], pin(__file__, "last"))
    assert BLOCK <= doc["duration"] < BLOCK + 0.2, doc["duration"]
    assert ended["duration"] >= BLOCK


def test_freeze_ending_as_the_process_exits_gets_its_end(tmp_path: Path) -> None:
    """The process exits right after the frozen asyncio.run(): the dump still has
    its duration (recorded when the watchdog stops at exit), and no unfinished dump."""
    dump_dir = tmp_path / "dumps"
    script = tmp_path / "app.py"
    script.write_text(textwrap.dedent(f"""
        import asyncio, time, freezewatch

        async def main():
            freezewatch.install(threshold=0.3, interval=0.1, dump_dir={str(dump_dir)!r},
                                native=False)
            await asyncio.sleep(0.2)
            time.sleep({BLOCK})  # pin: exit

        asyncio.run(main())
    """))
    proc = subprocess.run([sys.executable, "-W", "error", str(script)], capture_output=True,
                          text=True, timeout=30)
    assert proc.returncode == 0, proc.stderr
    (path,) = dumps(dump_dir)
    doc = assert_contract(path)
    assert_frame_is(doc["blocking_frame"], pin(script, "exit"))
    assert BLOCK <= doc["duration"] < BLOCK + 0.3, doc["duration"]
    assert "freeze_ended" in proc.stderr
