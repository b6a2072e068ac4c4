"""The smallest end-to-end check: a time.sleep freeze is pinned to its line."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

from conftest import assert_contract

import freezewatch


def test_sleep_freeze_pinned_to_line(dump_dir: Path, events) -> None:  # type: ignore[no-untyped-def]
    """A time.sleep on the loop thread gives a freeze dump naming that line."""

    async def main() -> int:
        freezewatch.install(threshold=0.3, interval=0.05, dump_dir=str(dump_dir), native=False)
        await asyncio.sleep(0.1)
        line = _block_line()
        time.sleep(1.0)
        await asyncio.sleep(0.3)
        return line

    line = asyncio.run(main())
    ended = events.wait("freeze_ended")
    assert ended["seconds"] >= 0.5
    (path,) = sorted(dump_dir.glob("freeze-*.json"))
    doc = assert_contract(path)
    assert doc["blocking_frame"]["file"] == __file__
    assert doc["blocking_frame"]["line"] == line
    assert doc["blocking_frame"]["code"] == "time.sleep(1.0)"
    assert doc["duration"] >= 0.5


def _block_line() -> int:
    import inspect

    frame = inspect.currentframe()
    assert frame is not None and frame.f_back is not None
    return frame.f_back.f_lineno + 1
