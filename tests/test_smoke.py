"""The smallest end-to-end check: a time.sleep freeze is pinned to its line."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

from conftest import only_dump
from core_support import assert_frame_is, pin

import freezewatch


def test_sleep_freeze_pinned_to_line(dump_dir: Path, events) -> None:  # type: ignore[no-untyped-def]
    """A time.sleep on the loop thread gives a freeze dump naming that line."""

    async def main() -> None:
        freezewatch.install(threshold=0.3, interval=0.05, dump_dir=str(dump_dir), native=False)
        await asyncio.sleep(0.1)
        time.sleep(1.0)  # pin: sleep
        await asyncio.sleep(0.3)

    asyncio.run(main())
    ended = events.wait("freeze_ended")
    assert ended["seconds"] >= 0.5
    doc = only_dump(dump_dir)
    assert_frame_is(doc["blocking_frame"], pin(__file__, "sleep"))
    assert doc["duration"] >= 0.5
