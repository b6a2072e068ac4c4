"""Guards against false alarms: a suspended process, allow_blocking, a debugger, repeats."""

from __future__ import annotations

import asyncio
import io
import json
import os
import pdb
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path
from typing import Any

from conftest import assert_contract, dumps, only_dump, wait_for
from core_support import FAST, assert_frame_is, pin

import freezewatch
from freezewatch._watchdog import THREAD_NAME

_SUSPEND_SCRIPT = """
import asyncio, json, os, sys, structlog, freezewatch

seen = []
def keep(_logger, _method, event_dict):
    seen.append(event_dict["event"])
    raise structlog.DropEvent
structlog.configure(processors=[keep])

async def main():
    w = freezewatch.install(threshold=0.3, interval=0.05, dump_dir={dump_dir!r}, native=False,
                            idle_beat_every=2.0)
    print("ready", flush=True)
    while not os.path.exists({stop!r}):   # idle: timers only, never blocking
        await asyncio.sleep(0.02)
    return w

w = asyncio.run(main())
freezewatch.uninstall()
print(json.dumps({{"events": seen, "freezes": w.freezes, "suspensions": w.suspensions}}))
"""


def test_suspended_process_is_not_a_freeze(dump_dir: Path, tmp_path: Path) -> None:
    """SIGSTOP then SIGCONT of a process with an idle watched loop: process_suspended, no dump."""
    stop = tmp_path / "stop"
    script = textwrap.dedent(_SUSPEND_SCRIPT.format(dump_dir=str(dump_dir), stop=str(stop)))
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline() == "ready\n"
        time.sleep(0.3)
        os.kill(proc.pid, signal.SIGSTOP)
        # 10x the threshold, the whole process stopped; longer than the watchdog
        # sleeps while the loop idles (idle_beat_every, 2 s here): a stop inside such
        # a sleep cannot be seen, and needs no record (nothing could freeze).
        time.sleep(3.0)
        os.kill(proc.pid, signal.SIGCONT)
        time.sleep(0.5)
        stop.touch()
        out, err = proc.communicate(timeout=20)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert (proc.returncode, err) == (0, "")
    result = json.loads(out.splitlines()[-1])
    assert "process_suspended" in result["events"]
    assert "freeze_detected" not in result["events"]
    assert result["freezes"] == 0 and result["suspensions"] >= 1
    assert dumps(dump_dir) == []


def test_allow_blocking_sync_and_async(dump_dir: Path, events: Any) -> None:
    """Blocks inside allow_blocking() (with and async with) give no dump; one right after does."""

    async def main() -> freezewatch.LoopWatch:
        w = freezewatch.install(dump_dir=str(dump_dir), **FAST)
        await asyncio.sleep(0.1)
        with freezewatch.allow_blocking("load model"):
            time.sleep(0.8)
        await asyncio.sleep(0.2)
        async with freezewatch.allow_blocking("warm cache"):
            time.sleep(0.8)
        await asyncio.sleep(0.2)
        assert w.freezes == 0 and dumps(dump_dir) == []
        with freezewatch.allow_blocking("startup"):
            time.sleep(1.0)
        time.sleep(1.0)  # pin: after-allow
        await asyncio.sleep(0.1)
        return w

    w = asyncio.run(main())
    events.wait("freeze_ended")
    assert w.freezes == 1
    doc = only_dump(dump_dir)
    assert_frame_is(doc["blocking_frame"], pin(__file__, "after-allow"))
    # Measured from the end of the allowed block, not from the beat sent before it.
    assert doc["blocked_for"] < 0.9


def _watchdog_wakeups() -> int:
    """Voluntary context switches of the watchdog thread so far: one per wait it does."""
    (t,) = [t for t in threading.enumerate() if t.name == THREAD_NAME]
    status = Path(f"/proc/self/task/{t.native_id}/status").read_text()
    return int(status.split("voluntary_ctxt_switches:")[1].split()[0])


def test_watchdog_idles_through_long_allowed_block(dump_dir: Path) -> None:
    """A 1.5 s allow_blocking() block (5x the threshold) keeps the watchdog at its interval."""

    async def main() -> int:
        freezewatch.install(dump_dir=str(dump_dir), **FAST)
        await asyncio.sleep(0.2)
        before = _watchdog_wakeups()
        with freezewatch.allow_blocking("long warm-up"):
            time.sleep(1.5)
        return _watchdog_wakeups() - before

    wakeups = asyncio.run(main())
    # At interval 0.05 s that is about 30; a watchdog polling the overdue beat
    # every millisecond wakes over a thousand times.
    assert wakeups < 200


async def _same_line_freeze() -> None:
    time.sleep(0.6)  # pin: repeat
    await asyncio.sleep(0.15)


def test_repeated_freezes_rate_limited(dump_dir: Path, events: Any) -> None:
    """Three freezes at one line within dump_rate_window: all counted, one dump written."""

    async def main() -> freezewatch.LoopWatch:
        w = freezewatch.install(dump_dir=str(dump_dir), dump_rate_window=60, **FAST)
        await asyncio.sleep(0.1)
        for _ in range(3):
            await _same_line_freeze()
        return w

    w = asyncio.run(main())
    wait_for(lambda: len(events.named("freeze_ended")) == 3)
    assert w.freezes == 3
    (path,) = dumps(dump_dir)
    assert_frame_is(assert_contract(path)["blocking_frame"], pin(__file__, "repeat"))
    first, *later = events.named("freeze_detected")
    assert first["dump_path"] == str(path)
    assert len(later) == 2
    for ev in later:
        assert "dump_path" not in ev and ev["reason"].startswith("rate limited")


def _stops_at_breakpoint() -> str:
    return "continued"  # pdb stops here, at the first line, and waits for a command


def test_debugger_stopped_is_not_a_freeze(dump_dir: Path, events: Any) -> None:
    """The loop thread sitting in a real pdb prompt: freeze_ignored, no dump, no freeze."""
    read_fd, write_fd = os.pipe()
    commands = os.fdopen(read_fd, "r")
    debugger = pdb.Pdb(stdin=commands, stdout=io.StringIO(), nosigint=True, readrc=False)

    wakeups: list[int] = []

    def release() -> None:
        wait_for(lambda: events.named("freeze_ignored"), timeout=15)
        before = _watchdog_wakeups()
        time.sleep(1.0)  # and stay stopped a while longer
        wakeups.append(_watchdog_wakeups() - before)
        os.write(write_fd, b"continue\n")

    threading.Thread(target=release, name="test-debugger-user", daemon=True).start()

    async def main() -> tuple[freezewatch.LoopWatch, str]:
        w = freezewatch.install(dump_dir=str(dump_dir), **FAST)
        await asyncio.sleep(0.1)
        # runcall() stops at the function's first line and reads a command
        # from `commands`, a pipe nobody writes to until the watchdog spoke.
        result = debugger.runcall(_stops_at_breakpoint)
        await asyncio.sleep(0.5)
        return w, result

    try:
        w, result = asyncio.run(main())
    finally:
        commands.close()
        os.close(write_fd)
    assert result == "continued"
    ignored = events.named("freeze_ignored")
    assert len(ignored) == 1 and "debugger" in ignored[0]["reason"]
    assert w.freezes == 0 and dumps(dump_dir) == []
    assert events.named("freeze_detected") == [] and events.named("freeze_ended") == []
    assert wakeups[0] < 150  # the watchdog does not poll the ignored beat (interval 0.05 s)
