"""Freezes that hold the GIL: pinned by faulthandler, native frames from the sentinel."""

from __future__ import annotations

import asyncio
import faulthandler
import math
import re
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import assert_contract, wait_for
from core_support import Pin, pin

import freezewatch
from freezewatch import _faulthandler, _state

# Catastrophic backtracking: the regex engine runs in C and never releases the GIL.
_EVIL = re.compile(r"(a+)+$")
_SRE_FRAMES = ("sre_match", "sre_ucs1_match", "SRE(match)", "_sre_SRE_Pattern_match")


def _pin(name: str) -> Pin:
    """(file, line, code) of the line of this file marked ``# pin: name``."""
    return pin(__file__, name)


def _calibrate(target: float = 2.5) -> str:
    """A subject string that keeps ``_EVIL.match`` busy for about ``target`` seconds here.

    The time doubles with each extra 'a'. The fastest of three timed runs is
    used (the least disturbed by other processes on a shared machine), so a
    busy moment during calibration makes the real run longer, never shorter.
    """
    n = 16
    while True:
        took = min(_timed(n) for _ in range(3))
        if took > 0.03 or n >= 26:
            break
        n += 1
    n += math.ceil(math.log2(target / max(took, 1e-6)))
    return "a" * max(16, min(n, 34)) + "b"


def _timed(n: int) -> float:
    t0 = time.perf_counter()
    _EVIL.match("a" * n + "b")
    return time.perf_counter() - t0


@pytest.fixture(autouse=True)
def _faulthandler_back() -> Iterator[None]:
    """faulthandler's timer is process-wide: leave it as the test found it."""
    yield
    freezewatch.uninstall()
    faulthandler.cancel_dump_traceback_later()
    _faulthandler._app_took_over = False
    _faulthandler._armed_pid = 0


def _only_dump(dump_dir: Path) -> dict[str, Any]:
    (path,) = sorted(dump_dir.glob("freeze-*.json"))
    return assert_contract(path)


@pytest.mark.parametrize(("layer", "captured_by"),
                         [(False, "py-spy (sentinel)"), (True, "faulthandler")])
def test_regex_holding_gil_is_pinned_with_native_frames(
        layer: bool, captured_by: str, dump_dir: Path, events: Any) -> None:
    """A regex holding the GIL ~2.5 s gives a freeze dump: gil_held, exact line, sre C frame."""
    subject = _calibrate()

    async def main() -> float:
        freezewatch.install(threshold=0.5, interval=0.05, dump_dir=str(dump_dir),
                            faulthandler=layer)
        await asyncio.sleep(0.6)  # the sentinel is up and the timer armed
        t0 = time.monotonic()
        _EVIL.match(subject)  # pin: evil
        took = time.monotonic() - t0
        await asyncio.sleep(0.3)
        return took

    took = asyncio.run(main())
    ended = events.wait("freeze_ended", timeout=20)
    assert took >= 0.8, f"calibration: the regex took only {took:.2f} s"
    doc = wait_for(lambda: (d := _only_dump(dump_dir)).get("duration") and d, 20)
    file, line, code = _pin("evil")
    assert doc["gil_held"] is True
    assert doc["captured_by"] == captured_by
    assert (doc["blocking_frame"]["file"], doc["blocking_frame"]["line"]) == (file, line)
    assert doc["blocking_frame"]["code"] == code
    assert doc["app_frame"]["line"] == line
    assert took - 0.1 <= doc["duration"] <= took + 0.5  # true duration, within ~one interval
    assert ended["seconds"] == pytest.approx(doc["duration"], abs=0.01)
    native = doc["native"]
    assert native["source"] == "sentinel"
    assert native["ok"], native["error"]
    loop_tid = doc["loop"]["thread_id"]
    (loop_native,) = [t for t in native["threads"] if t["thread_id"] == loop_tid]
    names = [f["function"] for f in loop_native["frames"] if f["native"]]
    assert any(n in _SRE_FRAMES for n in names), names
    txt = Path(str(ended["dump_path"])).with_suffix(".txt").read_text()
    py_stack = txt.index("Loop thread stack")
    assert py_stack < txt.index("Loop thread native stack") < txt.index("\nTasks:")
    assert "GIL:" in txt


def test_gil_freeze_with_heartbeat_out_is_pinned(dump_dir: Path, events: Any) -> None:
    """faulthandler on, a heartbeat out when the GIL is taken: the dump pins the regex line."""
    subject = _calibrate(1.5)

    async def main() -> None:
        freezewatch.install(threshold=0.4, interval=0.05, dump_dir=str(dump_dir), native=False,
                            faulthandler=True)
        await asyncio.sleep(0.3)
        time.sleep(0.15)  # busy (GIL released): the watchdog sends a beat, left unanswered
        _EVIL.match(subject)  # pin: beat-out
        await asyncio.sleep(0.3)

    asyncio.run(main())
    events.wait("freeze_ended", timeout=20)
    doc = wait_for(lambda: (d := _only_dump(dump_dir)).get("duration") and d, 20)
    file, line, _ = _pin("beat-out")
    assert doc["gil_held"] is True
    assert (doc["blocking_frame"]["file"], doc["blocking_frame"]["line"]) == (file, line)
    assert doc["duration"] >= 0.4
    assert doc["native"]["ok"] is False and "disabled" in doc["native"]["error"]


def test_faulthandler_off_gil_freeze_is_not_pinned(dump_dir: Path, events: Any) -> None:
    """Both layers off: no stack seen; a dump says when, how long, and why no line."""
    subject = _calibrate(1.5)

    async def main() -> float:
        freezewatch.install(threshold=0.4, interval=0.05, dump_dir=str(dump_dir), native=False,
                            faulthandler=False)
        await asyncio.sleep(0.3)
        time.sleep(0.15)  # busy: a heartbeat goes out, and is answered late
        t0 = time.monotonic()
        _EVIL.match(subject)
        took = time.monotonic() - t0
        await asyncio.sleep(0.3)
        return took

    took = asyncio.run(main())
    assert took >= 0.6, f"calibration: the regex took only {took:.2f} s"
    ended = events.wait("freeze_ended", timeout=20)
    assert "not seen live" in str(ended.get("reason"))
    assert "install py-spy" in str(ended.get("reason"))
    (path,) = dump_dir.glob("freeze-*.json")
    assert str(path) == ended["dump_path"]
    doc = assert_contract(path)
    assert doc["seen_live"] is False and doc["app_frame"] is None
    assert doc["blocking_frame"]["file"] == "<not captured>"  # never a guessed line
    assert doc["duration"] >= 0.4 and doc["native"]["ok"] is False


def test_app_timer_keeps_working_with_layer_disabled(dump_dir: Path) -> None:
    """An app that armed faulthandler itself keeps its timer with FREEZEWATCH_FAULTHANDLER=0."""
    with tempfile.TemporaryFile() as own:
        faulthandler.dump_traceback_later(0.6, file=own)

        async def main() -> None:
            freezewatch.install(threshold=0.3, interval=0.05, dump_dir=str(dump_dir),
                                native=False, faulthandler=False)
            await asyncio.sleep(0.2)
            time.sleep(1.0)  # pin: app-timer
            await asyncio.sleep(0.3)

        asyncio.run(main())
        own.seek(0)
        text = own.read().decode()
    _, line, _ = _pin("app-timer")
    assert "Timeout (0:00:00.600000)!" in text
    assert f'File "{__file__}", line {line} in main' in text
    assert _only_dump(dump_dir)["blocking_frame"]["line"] == line  # freezewatch still works


def test_app_arming_after_install_is_detected_and_kept(dump_dir: Path, events: Any) -> None:
    """The app arms faulthandler after install(): an event says so and the app's timer fires."""

    async def main() -> None:
        freezewatch.install(threshold=0.3, interval=0.05, dump_dir=str(dump_dir), native=False,
                            faulthandler=True)
        await asyncio.sleep(0.3)  # our timer is armed and re-armed
        wd = _state.watchdog
        assert wd is not None and wd.gil.timer.rearms > 0
        with tempfile.TemporaryFile() as own:
            faulthandler.dump_traceback_later(0.5, file=own)
            await asyncio.sleep(1.0)  # the watchdog keeps running: it must not re-arm over it
            own.seek(0)
            text = own.read().decode()
        assert "Timeout (0:00:00.500000)!" in text

    asyncio.run(main())
    ev = events.wait("faulthandler_conflict")
    assert "dump_traceback_later" in str(ev["reason"])
    assert "FREEZEWATCH_FAULTHANDLER=0" in str(ev["reason"])


def test_timer_rearm_rate_is_bounded(dump_dir: Path) -> None:
    """The faulthandler timer is re-armed about every threshold/2, not every heartbeat."""

    async def main() -> int:
        freezewatch.install(threshold=0.4, interval=0.02, dump_dir=str(dump_dir), native=False,
                            faulthandler=True)
        await asyncio.sleep(0.2)
        wd = _state.watchdog
        assert wd is not None
        before = wd.gil.timer.rearms
        await asyncio.sleep(2.0)
        return wd.gil.timer.rearms - before

    rearms = asyncio.run(main())
    assert 3 <= rearms <= 12  # ~2.0 / 0.2 = 10; ~100 watchdog rounds meanwhile
