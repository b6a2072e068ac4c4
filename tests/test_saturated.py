"""A busy loop is never reported as a frozen one (issue 10).

A saturated loop (thousands of ``sleep(0)`` tasks plus short callbacks that
spend their time in C, each turn well under the threshold) can keep the
watchdog from the GIL for a while, and a uvloop thread sits in C holding the
GIL most of the time: neither is a GIL-held freeze. Each loop kind runs RUNS
(7) times in a subprocess (tests/saturated_app.py) at freezewatch's defaults
(threshold 0.5, py-spy and the sentinel on); none may leave a freeze dump.
The control runs the same harness ending in a real GIL-held regex: its dump
is pinned on that exact line, so the test can fail.

Also the sentinel's own rule (``_sentinel_freeze.Dumper.native``): py-spy's
one sample of the loop thread owning the GIL in C makes a dump only if the
thread did not switch since the sentinel's first look in the silence.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from conftest import assert_contract, dumps
from core_support import pin
from test_gil import _calibrate

from freezewatch import _sentinel, _sentinel_freeze

APP = Path(__file__).with_name("saturated_app.py")
RUNS = 7
SECONDS = 1.5
THRESHOLD = 0.5  # freezewatch's default, which the app keeps
pytestmark = [pytest.mark.skipif(not sys.platform.startswith("linux"), reason="Linux: /proc"),
              pytest.mark.timeout(120)]


def _run(tmp_path: Path, kind: str, runs: int, seconds: float,
         regex: int | None = None) -> tuple[list[dict[str, Any]], str]:
    argv = [sys.executable, str(APP), str(tmp_path), kind, str(runs), str(seconds)]
    if regex is not None:
        argv.append(str(regex))
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=100,
                          env={**os.environ, "PYTHONWARNINGS": "error"})
    assert proc.returncode == 0, proc.stdout + proc.stderr
    got = [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]
    assert len(got) == runs, proc.stdout + proc.stderr
    return got, proc.stdout + proc.stderr


@pytest.mark.parametrize("kind", ["uvloop", "asyncio"])
def test_a_saturated_loop_is_never_reported_frozen(kind: str, tmp_path: Path) -> None:
    pytest.importorskip(kind)
    runs, out = _run(tmp_path, kind, RUNS, SECONDS)
    for i, r in enumerate(runs):
        found = dumps(tmp_path / f"run-{i}")
        docs = [assert_contract(p) for p in found]
        # Saturated: the loop turned over and over, running thousands of task
        # steps and callbacks, and the watchdog looked at it all along.
        assert r["turns"] >= 5 and r["calls"] >= 500 and r["tasks"] >= 300, r
        assert r["rounds"] >= 5, r
        if r["worst_turn"] >= THRESHOLD:
            continue  # the machine stalled the loop itself for a threshold: a real lag
        assert docs == [], (r, [(p.name, d["blocked_for"], d.get("gil_held"),
                                 d.get("captured_by"), d["blocking_frame"]) for p, d in
                                zip(found, docs, strict=True)], out)
        assert r["freezes"] == 0, r


@pytest.mark.parametrize("kind", ["uvloop", "asyncio"])
def test_the_same_harness_still_pins_a_real_gil_held_regex(kind: str, tmp_path: Path) -> None:
    pytest.importorskip(kind)
    subject = _calibrate(1.5)
    for attempt in range(3):
        base = tmp_path / str(attempt)
        (r,), out = _run(base, kind, 1, SECONDS, regex=len(subject) - 1)
        assert r["rounds"] >= 5 and r["calls"] >= 500, r
        found = dumps(base / "run-0")
        if found or "process_suspended" not in out:
            break
    else:
        pytest.skip("the machine was overloaded: the watchdog voided the freeze 3 times")
    assert found, (r, out)
    doc = assert_contract(found[0])
    file, line, code = pin(APP, "sat-regex")
    assert doc["gil_held"] is True
    assert (doc["blocking_frame"]["file"], doc["blocking_frame"]["line"]) == (file, line)
    assert doc["blocking_frame"]["code"] == code
    assert doc["blocked_for"] >= THRESHOLD


# -- the sentinel's rule, with made-up switch counts ----------------------------------------

def _native(ident: int) -> dict[str, Any]:
    return {"ok": True, "threads": [{"thread_id": ident, "owns_gil": True, "frames": [
        {"function": "main", "file": "/app/x.py", "line": 3, "native": False},
        {"function": "uv_run", "file": "libuv.so", "line": 0, "native": True}]}]}


@pytest.mark.parametrize(("counts", "written"), [
    ([7, 7], True),        # one C call holding the GIL: never slept
    ([7, 8], False),       # slept (blocked on the GIL it handed over): a busy loop
    ([None, None], False),  # unknown: no dump on one sample
])
def test_sentinel_writes_a_pyspy_dump_only_for_a_thread_that_never_slept(
        counts: list[int | None], written: bool, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    ident, tid = 0x7F00, 4242
    seq = iter(counts + [counts[-1]] * 4)
    d = _sentinel_freeze.Dumper(os.getpid(), str(tmp_path), lambda: 1,
                                lambda _tid: next(seq), lambda _ident: 0)
    d.cfg = {"loops": [{"ident": ident, "native_id": tid, "threshold": THRESHOLD,
                        "dump_dir": str(tmp_path / "dumps"), "idle_at": None}]}
    d.reset(0.0)
    monkeypatch.setattr(_sentinel_freeze.dump, "python_frames",
                        lambda nat, i: ([{"file": "/app/x.py", "line": 3, "function": "main",
                                          "code": None}], True))
    monkeypatch.setattr(_sentinel_freeze.Dumper, "_write",
                        lambda self, lp, *a: setattr(lp, "path", "written"))
    d.look()
    sw = d.before_native()
    assert sw == {str(ident): counts}
    d.native(_native(ident), 1.2, True)
    assert (d.loops[ident].path == "written") is written


@pytest.mark.parametrize(("after", "slept"), [(7, False), (9, True)])
def test_sentinel_tells_the_watchdog_a_captured_loop_slept_since(
        after: int, slept: bool, tmp_path: Path) -> None:
    """faulthandler caught the loop thread busy; a switch afterwards, the watchdog
    still blocked, makes it a busy loop for the watchdog (``Capture.slept``)."""
    ident = 0x7F01
    d = _sentinel_freeze.Dumper(os.getpid(), str(tmp_path), lambda: 1,
                                lambda _tid: after, lambda _ident: 0)
    d.cfg = {"loops": [{"ident": ident, "native_id": 4243, "threshold": 10.0,
                        "dump_dir": str(tmp_path / "dumps"), "idle_at": None}]}
    d.reset(100.0)
    lp = d.loops[ident]
    lp.frames, lp.switches = [{"file": "/app/x.py", "line": 3, "function": "f"}], 7
    d.first(0.3, blocked=True, pending=False)
    sp = _sentinel.Sentinel()
    sp._dir = str(tmp_path)
    assert (ident in sp.slept(100.0)) is slept
    assert sp.slept(101.0) == frozenset()  # a later silence: not that one
    d.first(0.3, blocked=False, pending=False)  # the watchdog runs again: no note


@pytest.mark.parametrize(("line_again", "switches_after", "written"), [
    (3, 7, True),      # the same line, never slept: one C call
    (9, 7, False),     # moved on without sleeping: a busy loop that kept the GIL
    (None, 7, True),   # not signalled again (the signal is not ours now): the count decides
    (None, 8, False),  # not signalled again because it slept: a busy loop
])
def test_sentinel_looks_again_before_it_writes_a_faulthandler_dump(
        line_again: int | None, switches_after: int, written: bool, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Silent for a threshold, the loop thread never slept: a second stack first. The
    same line is one C call (dumped); another line is a busy loop that kept the GIL
    (no dump, and the watchdog is told)."""
    ident = 0x7F02
    again = "" if line_again is None else (
        f'Thread 0x{ident:x} (most recent call first):\n'
        f'  File "/app/x.py", line {line_again} in f\n')
    d = _sentinel_freeze.Dumper(os.getpid(), str(tmp_path), lambda: 1,
                                lambda _tid: switches_after, lambda _ident: 0)
    d.recapture = lambda: again
    d.cfg = {"loops": [{"ident": ident, "native_id": 4244, "threshold": 0.5,
                        "dump_dir": str(tmp_path / "dumps"), "idle_at": None}]}
    d.reset(100.0)
    lp = d.loops[ident]
    lp.frames = _sentinel_freeze.dump.parse_faulthandler(
        f'Thread 0x{ident:x} (most recent call first):\n  File "/app/x.py", line 3 in f\n'
    )[ident]
    lp.switches, lp.wait0 = 7, None  # as at faulthandler's capture
    monkeypatch.setattr(_sentinel_freeze.Dumper, "_write",
                        lambda self, lp, *a: setattr(lp, "path", "written"))
    d.first(0.6, blocked=True, pending=False)
    assert (lp.path == "written") is written
    sp = _sentinel.Sentinel()
    sp._dir = str(tmp_path)
    assert (ident in sp.slept(100.0)) is not written
