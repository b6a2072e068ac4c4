"""Freezes that hold the GIL: pinned by faulthandler (signalled by the sentinel) or py-spy,
native frames from the sentinel."""

from __future__ import annotations

import asyncio
import faulthandler
import math
import os
import re
import signal
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import assert_contract, dumps, only_dump, wait_for
from core_support import pin

import freezewatch
from freezewatch import _faulthandler, _state

# Catastrophic backtracking: the regex engine runs in C and never releases the GIL.
_EVIL = re.compile(r"(a+)+$")
_SRE_FRAMES = ("sre_match", "sre_ucs1_match", "SRE(match)", "_sre_SRE_Pattern_match")


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
    """faulthandler's timer and handlers are process-wide: leave them as the test found them."""
    yield
    freezewatch.uninstall()
    faulthandler.cancel_dump_traceback_later()
    _faulthandler.release_app_claim()


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
    doc = wait_for(lambda: (d := only_dump(dump_dir)).get("duration") and d, 20)
    file, line, code = pin(__file__, "evil")
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
    doc = wait_for(lambda: (d := only_dump(dump_dir)).get("duration") and d, 20)
    file, line, _ = pin(__file__, "beat-out")
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
    (path,) = dumps(dump_dir)
    assert str(path) == ended["dump_path"]
    doc = assert_contract(path)
    assert doc["seen_live"] is False and doc["app_frame"] is None
    assert doc["blocking_frame"]["file"] == "<not captured>"  # never a guessed line
    assert doc["duration"] >= 0.4 and doc["native"]["ok"] is False


@pytest.mark.parametrize("layer", [False, True], ids=["layer-off", "layer-on"])
def test_app_timer_keeps_working(layer: bool, dump_dir: Path) -> None:
    """An app that armed faulthandler's timer itself keeps it, with the layer on or off."""
    with tempfile.TemporaryFile() as own:
        faulthandler.dump_traceback_later(0.6, file=own)

        async def main() -> None:
            freezewatch.install(threshold=0.3, interval=0.05, dump_dir=str(dump_dir),
                                native=False, faulthandler=layer)
            await asyncio.sleep(0.2)
            time.sleep(1.0)  # pin: app-timer
            await asyncio.sleep(0.3)

        asyncio.run(main())
        own.seek(0)
        text = own.read().decode()
    _, line, _ = pin(__file__, "app-timer")
    assert "Timeout (0:00:00.600000)!" in text
    assert f'File "{__file__}", line {line} in main' in text
    assert only_dump(dump_dir)["blocking_frame"]["line"] == line  # freezewatch still works


def test_app_taking_our_signal_is_detected_and_kept(dump_dir: Path, events: Any) -> None:
    """The app registers faulthandler on freezewatch's signal: an event says so, the
    app's handler is the one that runs, and uninstall() leaves it in place."""
    sig = _faulthandler.SIGNAL
    with tempfile.TemporaryFile() as own:

        async def main() -> None:
            freezewatch.install(threshold=0.3, interval=0.05, dump_dir=str(dump_dir),
                                native=False)
            await asyncio.sleep(0.3)  # the sentinel is up, our handler registered
            wd = _state.watchdog
            assert wd is not None and wd.gil.signal_dump.active
            faulthandler.register(sig, file=own, all_threads=False)
            await asyncio.sleep(0.2)
            assert not wd.gil.signal_dump.active

        asyncio.run(main())
        freezewatch.uninstall()
        signal.pthread_kill(threading.get_ident(), sig)  # pin: app-signal
        own.seek(0)
        text = own.read().decode()
    ev = events.wait("faulthandler_conflict")
    assert "faulthandler.register()" in str(ev["reason"]) and f"signal {sig}" in str(ev["reason"])
    assert "FREEZEWATCH_FAULTHANDLER=0" in str(ev["reason"])
    _, line, _ = pin(__file__, "app-signal")
    assert f'File "{__file__}", line {line} in ' in text


def test_signal_already_handled_is_left_alone(dump_dir: Path, events: Any) -> None:
    """A Python handler already set on freezewatch's signal: the layer stays off, says why."""
    sig = _faulthandler.SIGNAL
    got: list[int] = []
    old = signal.signal(sig, lambda n, _f: got.append(n))
    try:
        async def main() -> None:
            freezewatch.install(threshold=0.3, interval=0.05, dump_dir=str(dump_dir),
                                native=False)
            await asyncio.sleep(0.3)
            os.kill(os.getpid(), sig)
            await asyncio.sleep(0.05)

        asyncio.run(main())
        assert got == [sig]  # the application's handler still runs
        ev = events.wait("faulthandler_conflict")
        assert str(ev["reason"]).startswith(f"signal {sig} already has a handler in this process")
        assert "FREEZEWATCH_FAULTHANDLER=0" in str(ev["reason"])
    finally:
        signal.signal(sig, old)


@pytest.mark.parametrize("work", ["python-callbacks", "idle"])
def test_no_signal_while_python_runs(work: str, dump_dir: Path) -> None:
    """A healthy loop, busy with Python callbacks or idle: the sentinel never interrupts it
    (a signal is sent only while the watchdog is blocked on a held GIL)."""

    async def main() -> tuple[int, int]:
        # The watchdog sleeps 0.15 s between rounds, more than half the threshold:
        # that planned sleep must not count as silence.
        freezewatch.install(threshold=0.2, interval=0.15, dump_dir=str(dump_dir), native=False)
        await asyncio.sleep(0.3)
        wd = _state.watchdog
        assert wd is not None and wd.gil.sentinel.alive() and wd.gil.signal_dump.active
        end = time.monotonic() + 3.0
        n = 0
        while time.monotonic() < end:
            if work == "idle":
                await asyncio.sleep(0.1)
                continue
            for _ in range(200):
                n += len(str(list(range(50))))
            await asyncio.sleep(0)
        return wd.gil.captures, wd.gil.signal_dump.fd

    captures, fd = asyncio.run(main())
    assert fd >= 0
    assert captures == 0
    assert dumps(dump_dir) == []


def test_gil_freeze_pinned_without_pyspy(dump_dir: Path, events: Any, tmp_path: Path) -> None:
    """No py-spy at all: faulthandler, signalled by the sentinel, still pins the regex line;
    native.ok is false and says why."""
    subject = _calibrate(1.0)
    gone = tmp_path / "py-spy"  # a missing pyspy_path is refused at install: remove it after
    gone.write_text("#!/bin/sh\nexit 0\n")
    gone.chmod(0o755)

    async def main() -> str:
        freezewatch.install(threshold=0.5, interval=0.05, dump_dir=str(dump_dir),
                            pyspy_path=str(gone))
        gone.unlink()
        # Idle first: the watchdog parks and announces a quiet of about 2 s,
        # which the loop cuts short when it wakes: the sentinel must notice at
        # once, or it sleeps through this ~1 s freeze.
        await asyncio.sleep(1.0)
        _EVIL.match(subject)  # pin: no-pyspy
        await asyncio.sleep(0.3)
        task = asyncio.current_task()
        assert task is not None
        return task.get_name()

    task_name = asyncio.run(main())
    events.wait("freeze_ended", timeout=20)
    doc = wait_for(lambda: (d := only_dump(dump_dir)).get("duration") and d, 20)
    file, line, _ = pin(__file__, "no-pyspy")
    assert doc["gil_held"] is True and doc["captured_by"] == "faulthandler"
    assert (doc["blocking_frame"]["file"], doc["blocking_frame"]["line"]) == (file, line)
    assert doc["native"]["ok"] is False
    assert "py-spy not found" in doc["native"]["error"]
    assert f"line {line} in main" in doc["faulthandler"]
    assert doc["current_task"] == task_name  # the task that ran the regex, from its stack


def test_gil_freeze_on_a_loop_in_another_thread(dump_dir: Path, events: Any) -> None:
    """A loop in a background thread (watched with loop=) holds the GIL in a regex: the
    sentinel signals that thread, and its dump pins the regex line there."""
    subject = _calibrate(2.0)
    loop = asyncio.new_event_loop()
    ready = threading.Event()

    async def work() -> None:
        ready.set()
        await asyncio.sleep(0.8)
        _EVIL.match(subject)  # pin: bg-thread
        await asyncio.sleep(0.3)

    worker = threading.Thread(target=loop.run_until_complete, args=(work(),), name="bg-loop")
    freezewatch.install(loop=loop, threshold=0.5, interval=0.05, dump_dir=str(dump_dir),
                        native=False, name="bg")
    worker.start()
    try:
        assert ready.wait(5)
        ev = events.wait("freeze_ended", timeout=20)
    finally:
        worker.join(20)
        freezewatch.uninstall()
        loop.close()
    assert ev["loop"] == "bg"
    doc = assert_contract(Path(str(ev["dump_path"])))
    file, line, _ = pin(__file__, "bg-thread")
    assert doc["gil_held"] is True and doc["captured_by"] == "faulthandler"
    assert (doc["blocking_frame"]["file"], doc["blocking_frame"]["line"]) == (file, line)
    assert doc["loop"]["thread_name"] == "bg-loop"


def test_no_signal_while_threads_compete_for_the_gil(dump_dir: Path) -> None:
    """Eight threads running Python compete for the GIL with the loop and the watchdog:
    the watchdog waits long for the GIL, but bytecode keeps changing hands, so the
    sentinel never interrupts a loop thread (it could be running bytecode)."""
    stop = threading.Event()

    def spin() -> None:
        n = 0
        while not stop.is_set():
            n += sum(range(100))

    async def main() -> tuple[int, int]:
        freezewatch.install(threshold=0.1, interval=0.02, dump_dir=str(dump_dir), native=False)
        await asyncio.sleep(0.3)
        wd = _state.watchdog
        assert wd is not None and wd.gil.sentinel.alive() and wd.gil.signal_dump.active
        rounds0 = wd.rounds
        threads = [threading.Thread(target=spin) for _ in range(8)]
        for t in threads:
            t.start()
        try:
            end = time.monotonic() + 3.0
            while time.monotonic() < end:
                await asyncio.sleep(0)
        finally:
            stop.set()
            for t in threads:
                t.join()
        return wd.gil.captures, wd.rounds - rounds0

    captures, rounds = asyncio.run(main())
    assert rounds > 0
    assert captures == 0


def test_garbage_collection_freeze_is_named(dump_dir: Path, events: Any) -> None:
    """A full garbage collection of a large heap on the loop thread holds the GIL past
    the threshold: the dump pins the line that triggered it, cause garbage collection."""
    import gc

    heap: list[dict[str, list[int]]] = []
    took = 0.0
    while took < 0.3 and len(heap) < 2_400_000:  # ~0.3 s of collecting, ~600 MB at most
        heap.extend({"a": []} for _ in range(300_000))
        t0 = time.perf_counter()
        gc.collect()
        took = time.perf_counter() - t0
    if took < 0.15:
        pytest.skip(f"a full collection takes only {took:.2f} s here")

    async def main() -> None:
        freezewatch.install(threshold=0.1, interval=0.02, dump_dir=str(dump_dir), native=False)
        await asyncio.sleep(0.3)
        gc.collect()  # pin: gc
        await asyncio.sleep(0.2)

    try:
        asyncio.run(main())
        ev = events.wait("freeze_ended", timeout=20)
    finally:
        heap.clear()
    doc = assert_contract(Path(str(ev["dump_path"])))
    file, line, _ = pin(__file__, "gc")
    assert doc["gil_held"] is True
    assert (doc["blocking_frame"]["file"], doc["blocking_frame"]["line"]) == (file, line)
    assert doc["cause"] == "garbage collection"
    assert "garbage collection held the GIL" in doc["kernel_summary"]
