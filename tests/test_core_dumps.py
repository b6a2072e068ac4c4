"""Dump files: written while frozen, given a duration, bounded, survived when unwritable."""

from __future__ import annotations

import asyncio
import json
import shutil
import stat
import threading
import time
from pathlib import Path
from typing import Any

from conftest import assert_contract, dumps, only_dump, wait_for
from core_support import FAST, assert_frame_is, pin

import freezewatch


async def _freeze(seconds: float) -> None:
    """One freeze at the same line every time, then let the loop breathe."""
    time.sleep(seconds)  # pin: helper
    await asyncio.sleep(0.15)


def test_dump_exists_while_frozen_and_gets_duration(dump_dir: Path, events: Any) -> None:
    """The dump appears while the loop is still blocked; its end adds duration to file and event."""
    release = threading.Event()
    block_ended: list[float] = []
    seen: dict[str, Any] = {}

    def watcher() -> None:
        # Runs while the loop thread is blocked on `release`: it only lets go
        # after it has looked at the dump.
        try:
            (path,) = wait_for(lambda: dumps(dump_dir), timeout=15)
            seen["still_blocked"] = not block_ended
            seen["doc"] = json.loads(path.read_text())
            time.sleep(0.5)  # stay frozen a while after detection
        finally:
            release.set()

    threading.Thread(target=watcher, name="test-watcher", daemon=True).start()

    async def main() -> None:
        freezewatch.install(dump_dir=str(dump_dir), **FAST)
        await asyncio.sleep(0.1)
        release.wait(20)  # pin: wait
        block_ended.append(time.time())
        await asyncio.sleep(0.1)

    asyncio.run(main())
    ended = events.wait("freeze_ended")
    assert seen["still_blocked"] is True
    during = seen["doc"]
    assert "duration" not in during
    assert during["detected_at"] < block_ended[0]
    assert_frame_is(during["app_frame"], pin(__file__, "wait"))

    (path,) = dumps(dump_dir)
    doc = assert_contract(path)
    assert doc["duration"] > doc["blocked_for"] >= 0.3
    assert doc["duration"] >= 0.5
    assert ended["duration"] == round(doc["duration"], 3)
    assert ended["dump_path"] == str(path)
    detected = events.named("freeze_detected")[0]
    expected = pin(__file__, "wait")
    assert detected["dump_path"] == str(path)
    function = doc["app_frame"]["function"]
    assert detected["app_line"] == f"{expected.file}:{expected.line} in {function}"
    assert detected["blocked_for"] >= 0.3
    assert "the freeze ended after" in path.with_suffix(".txt").read_text()


def test_freeze_update_dumps(dump_dir: Path, events: Any) -> None:
    """A 3.5 s block with update_after=(1, 2): freeze-update dumps follow, frame not moved."""

    async def main() -> None:
        freezewatch.install(dump_dir=str(dump_dir), update_after=(1.0, 2.0), **FAST)
        await asyncio.sleep(0.1)
        time.sleep(3.5)  # pin: long
        await asyncio.sleep(0.1)

    asyncio.run(main())
    events.wait("freeze_ended")
    first, *updates = dumps(dump_dir)
    assert len(updates) >= 2
    expected = pin(__file__, "long")
    doc = assert_contract(first)
    assert doc["kind"] == "freeze" and doc["duration"] >= 3.0
    seq = int(first.stem.rsplit("-", 1)[1])
    for n, path in enumerate(updates, 1):
        assert path.name.startswith("freeze-")
        assert int(path.stem.rsplit("-", 1)[1]) == seq + n
        up = assert_contract(path)
        assert up["kind"] == "freeze-update"
        assert up["frame_moved"] is False
        assert up["first_dump"] == first.name
        assert up["blocked_for"] >= 0.9 * n
        assert_frame_is(up["blocking_frame"], expected)
    assert len(events.named("freeze_updated")) == len(updates)


def test_retention_by_count_removes_oldest(dump_dir: Path, events: Any) -> None:
    """max_dumps=2: after three freezes the oldest pair (.json and .txt) is gone."""

    async def main() -> freezewatch.LoopWatch:
        w = freezewatch.install(dump_dir=str(dump_dir), max_dumps=2, dump_rate_window=0, **FAST)
        await asyncio.sleep(0.1)
        for _ in range(3):
            await _freeze(0.6)
        return w

    w = asyncio.run(main())
    wait_for(lambda: len(events.named("freeze_ended")) == 3)
    assert len(w.dumps) == 3
    oldest, *kept = map(Path, w.dumps)
    assert not oldest.exists() and not oldest.with_suffix(".txt").exists()
    assert dumps(dump_dir) == kept
    for path in kept:
        assert_frame_is(assert_contract(path)["blocking_frame"], pin(__file__, "helper"))


def test_retention_by_bytes_removes_oldest(dump_dir: Path, events: Any) -> None:
    """max_dump_bytes below two dumps' size: the next dump removes the older one."""

    async def one_freeze(**settings: Any) -> None:
        freezewatch.install(dump_dir=str(dump_dir), **FAST, **settings)
        await asyncio.sleep(0.1)
        await _freeze(0.6)

    asyncio.run(one_freeze())
    wait_for(lambda: events.named("freeze_ended"))
    freezewatch.uninstall()
    (older,) = dumps(dump_dir)
    pair = older.stat().st_size + older.with_suffix(".txt").stat().st_size
    asyncio.run(one_freeze(max_dump_bytes=int(pair * 1.5), dump_rate_window=0))
    wait_for(lambda: len(events.named("freeze_ended")) == 2)
    (newer,) = dumps(dump_dir)
    assert newer != older and not older.with_suffix(".txt").exists()
    assert_contract(newer)


def test_retention_not_undone_by_duration_rewrite(dump_dir: Path, events: Any) -> None:
    """max_dumps=1 with an update dump: the first dump of a freeze still going on is
    never removed (it gets the duration when the freeze ends); once it has it, the
    bound holds again and the update dump goes."""

    async def main() -> None:
        freezewatch.install(dump_dir=str(dump_dir), max_dumps=1, update_after=(0.8,), **FAST)
        await asyncio.sleep(0.1)
        time.sleep(1.3)
        await asyncio.sleep(0.1)

    asyncio.run(main())
    events.wait("freeze_ended")
    doc = only_dump(dump_dir)
    assert doc["kind"] == "freeze" and doc["duration"] > 1.2
    assert len(list(dump_dir.iterdir())) == 2  # the .json and its .txt, nothing else


def test_dump_dir_removed_mid_run(dump_dir: Path, events: Any) -> None:
    """Dump dir deleted while running: created again (0700) at the next dump."""

    async def main() -> freezewatch.LoopWatch:
        w = freezewatch.install(dump_dir=str(dump_dir), **FAST)
        await asyncio.sleep(0.1)
        shutil.rmtree(dump_dir)
        await _freeze(0.7)
        return w

    w = asyncio.run(main())
    events.wait("freeze_ended")
    assert w.freezes == 1 and w.dump_failures == 0
    assert stat.S_IMODE(dump_dir.stat().st_mode) == 0o700
    (path,) = dumps(dump_dir)
    assert_frame_is(assert_contract(path)["blocking_frame"], pin(__file__, "helper"))


def test_dump_dir_unusable_mid_run(dump_dir: Path, events: Any) -> None:
    """Dump dir replaced by a file: dump_failed, the watchdog goes on, and dumps again
    once the file is gone (the directory is created again)."""

    async def main() -> freezewatch.LoopWatch:
        w = freezewatch.install(dump_dir=str(dump_dir), **FAST)
        await asyncio.sleep(0.1)
        shutil.rmtree(dump_dir)
        dump_dir.write_text("not a directory")
        await _freeze(0.7)
        wait_for(lambda: events.named("freeze_ended"))
        assert w.active and w.dump_failures == 1 and w.freezes == 1
        dump_dir.unlink()
        await _freeze(0.7)  # the same line again: the failed dump does not rate-limit it
        return w

    w = asyncio.run(main())
    wait_for(lambda: len(events.named("freeze_ended")) == 2)
    failed = events.wait("dump_failed")
    assert "Not a directory" in failed["reason"]
    assert w.freezes == 2 and w.dump_failures == 1
    (path,) = dumps(dump_dir)
    assert_frame_is(assert_contract(path)["blocking_frame"], pin(__file__, "helper"))
    first, second = events.named("freeze_detected")
    assert "dump_path" not in first and second["dump_path"] == str(path)
    # The event of the freeze whose dump failed says so, and why (not just no path).
    assert first["reason"].startswith("dump_failed: ") and "Not a directory" in first["reason"]
