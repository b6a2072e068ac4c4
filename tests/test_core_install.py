"""install()/uninstall(): where it can be called, which loop it watches, what it leaves behind."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from conftest import dumps, only_dump, wait_for
from core_support import FAST, LOOP_FACTORIES, LoopFactory, assert_frame_is, pin

import freezewatch
from freezewatch._watchdog import THREAD_NAME


def _watchdog_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == THREAD_NAME]


# -- settings ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"threshold": 0}, "threshold must be > 0, got 0 from install(threshold=...)"),
        ({"threshold": -1.0}, "threshold must be > 0, got -1.0 from install(threshold=...)"),
        ({"threshold": 0.5, "interval": 0.5},
         "interval must be below threshold (0.5), got 0.5 from install(interval=...)"),
        ({"threshold": 0.5, "interval": 2},
         "interval must be below threshold (0.5), got 2 from install(interval=...)"),
    ],
)
def test_invalid_setting_raises_naming_it(settings: dict[str, Any], message: str,
                                          dump_dir: Path) -> None:
    """Bad values raise ValueError naming setting, value and source; no thread is started."""
    with pytest.raises(ValueError) as err:
        freezewatch.install(dump_dir=str(dump_dir), **settings)
    assert str(err.value) == message
    assert _watchdog_threads() == []


def test_non_numeric_env_value(monkeypatch: pytest.MonkeyPatch, dump_dir: Path) -> None:
    """FREEZEWATCH_THRESHOLD=abc raises ValueError naming the variable and the value."""
    monkeypatch.setenv("FREEZEWATCH_THRESHOLD", "abc")
    with pytest.raises(ValueError) as err:
        freezewatch.install(dump_dir=str(dump_dir))
    assert str(err.value) == (
        "threshold must be a number, got 'abc' from FREEZEWATCH_THRESHOLD environment variable"
    )


def test_env_twin_used_and_kwarg_wins(monkeypatch: pytest.MonkeyPatch, dump_dir: Path) -> None:
    """The env twin applies when no keyword is given; an explicit keyword wins over it."""
    monkeypatch.setenv("FREEZEWATCH_THRESHOLD", "0.7")
    monkeypatch.setenv("FREEZEWATCH_DUMP_DIR", str(dump_dir))

    async def from_env() -> freezewatch.LoopWatch:
        return freezewatch.install(native=False)

    w = asyncio.run(from_env())
    assert (w.config.threshold, w.config.dump_dir) == (0.7, str(dump_dir))
    freezewatch.uninstall()

    monkeypatch.setenv("FREEZEWATCH_INTERVAL", "not a number")  # shadowed by the keyword

    async def explicit() -> freezewatch.LoopWatch:
        return freezewatch.install(threshold=0.4, interval=0.1, native=False)

    w = asyncio.run(explicit())
    assert (w.config.threshold, w.config.interval) == (0.4, 0.1)


@pytest.mark.parametrize("where", ["under-a-file", "proc"])
def test_unwritable_dump_dir(where: str, tmp_path: Path) -> None:
    """A dump dir that cannot be created (under a regular file, in /proc) raises ValueError."""
    if where == "proc":
        bad = "/proc/freezewatch-dumps"
    else:
        (tmp_path / "plain-file").write_text("not a directory")
        bad = str(tmp_path / "plain-file" / "dumps")
    with pytest.raises(ValueError) as err:
        freezewatch.install(dump_dir=bad, native=False)
    assert str(err.value).startswith(f"dump_dir {bad!r} (from install(dump_dir=...)) cannot be")
    assert _watchdog_threads() == []


def test_unwritable_dump_dir_from_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """FREEZEWATCH_DUMP_DIR pointing under a regular file names the variable."""
    (tmp_path / "plain-file").write_text("")
    monkeypatch.setenv("FREEZEWATCH_DUMP_DIR", str(tmp_path / "plain-file" / "d"))
    with pytest.raises(ValueError, match="from FREEZEWATCH_DUMP_DIR environment variable"):
        freezewatch.install(native=False)


# -- the handle and the thread ---------------------------------------------------


def test_install_twice_same_handle(dump_dir: Path) -> None:
    """Inside a running loop, install() twice (or with loop=) returns the same handle."""

    async def main() -> None:
        a = freezewatch.install(dump_dir=str(dump_dir), **FAST)
        b = freezewatch.install(dump_dir=str(dump_dir), **FAST)
        c = freezewatch.install(asyncio.get_running_loop(), dump_dir=str(dump_dir), **FAST)
        assert a is b is c
        assert a.active and len(_watchdog_threads()) == 1

    asyncio.run(main())


def test_uninstall_leaves_no_thread(dump_dir: Path) -> None:
    """uninstall() stops the watchdog thread before it returns, and is idempotent."""

    async def main() -> freezewatch.LoopWatch:
        w = freezewatch.install(dump_dir=str(dump_dir), **FAST)
        await asyncio.sleep(0.2)
        assert len(_watchdog_threads()) == 1
        freezewatch.uninstall()
        assert _watchdog_threads() == []
        assert not w.active
        freezewatch.uninstall()
        w.uninstall()
        return w

    asyncio.run(main())
    assert _watchdog_threads() == []


def _block_main_thread() -> None:
    time.sleep(1.0)  # pin: before-loop


def test_install_before_asyncio_run(dump_dir: Path, events: Any) -> None:
    """install() where no loop runs yet, then asyncio.run(): that loop's freeze is caught."""
    w = freezewatch.install(dump_dir=str(dump_dir), **FAST)
    assert w.loop is None

    async def main() -> asyncio.AbstractEventLoop:
        await asyncio.sleep(0.2)
        _block_main_thread()
        await asyncio.sleep(0.1)
        return asyncio.get_running_loop()

    loop = asyncio.run(main())
    events.wait("freeze_ended")
    assert w.loop is loop and w.freezes == 1
    assert_frame_is(only_dump(dump_dir)["blocking_frame"], pin(__file__, "before-loop"))


@pytest.mark.parametrize("loop_factory", LOOP_FACTORIES)
def test_install_before_run_forever(loop_factory: LoopFactory, dump_dir: Path,
                                    events: Any) -> None:
    """install() before a loop started with run_forever(): that loop's freeze is caught."""
    w = freezewatch.install(dump_dir=str(dump_dir), **FAST)
    loop = loop_factory()
    try:
        loop.call_later(0.2, _block_main_thread)
        loop.call_later(1.5, loop.stop)
        loop.run_forever()
    finally:
        loop.close()
    events.wait("freeze_ended")
    assert w.loop is loop and w.freezes == 1
    doc = only_dump(dump_dir)
    assert_frame_is(doc["blocking_frame"], pin(__file__, "before-loop"))
    assert doc["loop"]["thread_name"] == "MainThread"


def _block_other_loop(release: threading.Event) -> None:
    release.wait(15)  # pin: other-loop


@pytest.mark.parametrize("loop_factory", LOOP_FACTORIES)
@pytest.mark.parametrize("when", ["healthy", "already-frozen"])
def test_loop_in_other_thread(loop_factory: LoopFactory, when: str, dump_dir: Path,
                              events: Any) -> None:
    """install(loop=...) for a loop in another thread: only it is reported, named by its thread."""
    other = loop_factory()
    started, release = threading.Event(), threading.Event()
    t = threading.Thread(target=lambda: (other.call_soon(started.set), other.run_forever()),
                         name="scheduler-loop", daemon=True)
    t.start()
    assert started.wait(5)

    async def main() -> tuple[freezewatch.LoopWatch, freezewatch.LoopWatch]:
        here = freezewatch.install(dump_dir=str(dump_dir), **FAST)
        if when == "already-frozen":  # installed while that loop is stuck
            other.call_soon_threadsafe(_block_other_loop, release)
            await asyncio.sleep(0.1)
        there = freezewatch.install(other, dump_dir=str(dump_dir), **FAST)
        if when == "healthy":
            await asyncio.sleep(0.3)
            other.call_soon_threadsafe(_block_other_loop, release)
        await asyncio.to_thread(wait_for, lambda: dumps(dump_dir), 15)
        release.set()
        await asyncio.to_thread(events.wait, "freeze_ended")
        return here, there

    try:
        here, there = asyncio.run(main())
    finally:
        release.set()
        other.call_soon_threadsafe(other.stop)
        t.join(5)
        other.close()
    assert here is not there
    assert (here.freezes, there.freezes) == (0, 1)
    assert {e["loop"] for e in events.named("freeze_detected")} == {"scheduler-loop"}
    doc = only_dump(dump_dir)
    assert doc["loop"]["name"] == doc["loop"]["thread_name"] == "scheduler-loop"
    assert doc["loop"]["thread_id"] == t.ident
    assert_frame_is(doc["app_frame"], pin(__file__, "other-loop"))


@pytest.mark.parametrize("loop_factory", LOOP_FACTORIES)
def test_loop_stopped_then_closed_with_beat_pending(loop_factory: LoopFactory, dump_dir: Path,
                                                    events: Any) -> None:
    """A loop stopped with a heartbeat queued, restarted, then closed: no false freeze."""
    loop = loop_factory()
    w = freezewatch.install(loop, dump_dir=str(dump_dir), threshold=0.3, interval=0.02,
                            native=False)

    def busy_then_stop() -> None:
        time.sleep(0.15)  # below the threshold, long enough for a beat to be queued
        loop.stop()

    def beat_left_queued() -> bool:
        # The scenario is real: a beat was sent and is still queued, unanswered.
        # (uvloop runs call_soon_threadsafe callbacks queued before stop() takes
        # effect, so there no beat is left behind; the same path still runs.)
        return w.state.sent_seq > w.answered()[0] or loop_factory is not asyncio.new_event_loop

    try:
        loop.call_soon(busy_then_stop)
        loop.run_forever()
        assert beat_left_queued()
        time.sleep(1.0)  # stopped for 3x the threshold
        loop.call_soon(busy_then_stop)
        loop.run_forever()  # the stale beat runs now; a new one is left queued
        assert beat_left_queued()
    finally:
        loop.close()  # closed with that beat queued
    wait_for(lambda: not w.active, timeout=5)
    assert w.freezes == 0 and dumps(dump_dir) == []
    assert events.named("freeze_detected") == [] and events.named("freeze_ended") == []
    # The last watched loop closed: the thread goes too (once its sentinel is let go).
    wait_for(lambda: _watchdog_threads() == [], timeout=5)


# -- interpreter exit ------------------------------------------------------------


_EXIT_SCRIPT = """
import asyncio, sys, time, freezewatch, structlog

# The application's own log setup (to stdout): stderr then holds only what
# freezewatch would print by itself at exit, which must be nothing.
structlog.configure(logger_factory=structlog.PrintLoggerFactory(sys.stdout))

freezewatch.install(threshold=0.3, interval=0.05, dump_dir={dump_dir!r}, native=False)

async def main():
    await asyncio.sleep(0.2)
    time.sleep(0.6)        # one freeze, so every thread has worked
    await asyncio.sleep(0.2)

asyncio.run(main(), debug=False)  # -X dev: asyncio's own slow-callback warning is not ours
freezewatch.install(threshold=0.3, interval=0.05, dump_dir={dump_dir!r}, native=False)
print("done", flush=True)  # exits with a watchdog waiting for a loop that never comes
"""


def test_interpreter_exit_is_quiet_and_prompt(dump_dir: Path) -> None:
    """A process exiting with freezewatch installed prints nothing on stderr and exits at once."""
    script = textwrap.dedent(_EXIT_SCRIPT.format(dump_dir=str(dump_dir)))
    env = {**os.environ, "PYTHONWARNINGS": "error"}
    started = time.monotonic()
    proc = subprocess.run([sys.executable, "-X", "dev", "-c", script], capture_output=True,
                          text=True, timeout=30, env=env)
    took = time.monotonic() - started
    assert (proc.returncode, proc.stderr) == (0, "")
    assert "freeze_detected" in proc.stdout and proc.stdout.rstrip().endswith("done")
    assert took < 10
    assert len(dumps(dump_dir)) == 1


def test_pending_install_ignores_loops_of_other_threads(dump_dir: Path) -> None:
    """install() before any loop waits for a loop of its own thread: a running loop it
    only refers to (running in another thread, or passed to install(loop=...)) is not it."""
    pending = freezewatch.install(dump_dir=str(dump_dir), **FAST)
    bg = asyncio.new_event_loop()
    worker = threading.Thread(target=bg.run_forever, name="bg-loop")
    worker.start()
    try:
        loop = bg  # this thread's frame refers to a running loop, as a loop runner would
        bg_handle = freezewatch.install(loop=loop, dump_dir=str(dump_dir), **FAST)
        time.sleep(0.5)  # the watchdog reads this thread's stack meanwhile
        assert pending.loop is None and pending.active
        assert bg_handle.loop is bg and bg_handle is not pending

        async def main() -> asyncio.AbstractEventLoop:
            await asyncio.sleep(0.3)
            return asyncio.get_running_loop()

        own = asyncio.run(main())
        assert pending.loop is own  # the first loop this thread ran
    finally:
        bg.call_soon_threadsafe(bg.stop)
        worker.join(5)
        bg.close()
