"""What becomes of the dump the sentinel wrote in a silence the watchdog then
explained otherwise (an overloaded machine, a suspended process, a busy loop).

A short silence is not a freeze: its dump goes. A long one (4 thresholds, at
least 2 s) is evidence and stays, and the watchdog completes it there and then:
its ``duration``, ``complete: true``, and in ``ended_because`` what the
watchdog made of it. ``complete: false`` then keeps its one meaning: the
process never ran again (killed mid-freeze, or frozen still).

Once the watchdog takes a dump over (this way, or as a GIL-held freeze it
completes) the sentinel never writes it again: before, its refresh of
``blocked_for`` (once a second while it thinks the freeze goes on) could land
after the watchdog's rewrite and put ``complete: false`` back. (A removed
dump stays removed either way: the sentinel rewrites only a file that is
there; the test of that guards the rule.)

These run the sentinel's real dump writer (``_sentinel_freeze.Dumper``, in
this process, on this thread's real /proc entries) and the watchdog's real
settling code on real files; the sentinel *process* is not started: what is
exchanged with it is its shared page (an anonymous mmap here, as in the
parent) and its report file, both real.
"""

from __future__ import annotations

import json
import mmap
import os
import struct
import threading
from pathlib import Path
from typing import Any

import pytest
from conftest import assert_contract, dumps

from freezewatch import _config, _gil, _sentinel, _sentinel_freeze, _sentinel_main

IDENT = threading.get_ident()
WHY = "the machine was overloaded: the watchdog or the loop thread waited for a CPU"


class Parts:
    """A sentinel dump writer and the parent's view of the same shared page."""

    def __init__(self, tmp_path: Path, threshold: float) -> None:
        self.dump_dir = tmp_path / "dumps"
        self.dump_dir.mkdir(mode=0o700)
        private = tmp_path / "sentinel"
        private.mkdir(mode=0o700)
        mm = mmap.mmap(-1, _sentinel_main._SIZE)
        self.sp = _sentinel.Sentinel()
        self.sp._mm, self.sp._dir = mm, str(private)
        self.sp.proc = object()  # type: ignore[assignment]  # stands for the running process
        self.sp.set_loops(((IDENT, threading.get_native_id()),))
        self.sp.answered({IDENT: 41})  # the loop's last answered beat, as published each round

        def answered(ident: int) -> int:  # how _sentinel_main reads its slot
            return int(struct.unpack_from("<Q", mm, _sentinel_main._ANSWERED)[0])

        self.dumper = _sentinel_freeze.Dumper(os.getpid(), str(private), lambda: 1,
                                              lambda _tid: 7, answered)
        self.dumper.cfg = {"loops": [{
            "ident": IDENT, "native_id": threading.get_native_id(), "threshold": threshold,
            "dump_dir": str(self.dump_dir), "idle_at": None, "name": "MainThread",
            "thread_name": "MainThread"}]}
        self.cfg = _config.load({"threshold": threshold, "dump_dir": str(self.dump_dir)}, {})
        self.gl = _gil.GilLayers()
        self.gl.sentinel = self.sp

    def sentinel_dumps(self, silence: float) -> Path:
        """The sentinel's dump of a GIL-held silence of ``silence`` s, as it writes it."""
        d = self.dumper
        d.reset(100.0)
        lp = d.loops[IDENT]
        lp.frames = [{"file": "/app/worker.py", "line": 12, "function": "crunch", "code": None}]
        lp.switches, lp.rechecked = 7, True
        d.first(silence, blocked=True, pending=False)
        (path,) = dumps(self.dump_dir)
        doc = json.loads(path.read_text())
        assert (doc["complete"], doc["written_by"]) == (False, "sentinel")
        return path


@pytest.mark.parametrize(("threshold", "silence", "kept"), [
    (0.5, 1.0, False),   # 2 thresholds: not a freeze, removed
    (0.5, 1.9, False),   # 4 thresholds but under 2 s: removed
    (0.5, 2.5, True),    # 5 thresholds and over 2 s: kept, completed
    (1.0, 3.0, False),   # 3 thresholds
    (1.0, 4.2, True),
])
def test_a_silence_put_down_to_load_removes_its_dump_or_completes_it(
        threshold: float, silence: float, kept: bool, tmp_path: Path) -> None:
    parts = Parts(tmp_path, threshold)
    path = parts.sentinel_dumps(silence)
    got = parts.gl.settle_sentinel_dumps(0.0, [(IDENT, parts.cfg)], silence, WHY)
    if not kept:
        assert got == [] and list(parts.dump_dir.iterdir()) == []
        return
    assert got == [str(path)]
    doc = assert_contract(path)
    assert doc["complete"] is True and doc["ended_because"] == WHY
    assert doc["duration"] >= silence and doc["duration"] >= doc["blocked_for"]
    assert doc["written_by"] == "sentinel (during the silence), completed by the watchdog"
    assert (doc["blocking_frame"]["file"], doc["blocking_frame"]["line"]) == ("/app/worker.py", 12)
    txt = path.with_suffix(".txt").read_text()
    assert "the freeze ended after" in txt and "did not run again" not in txt


def _refreshed(parts: Parts, path: Path) -> dict[str, Any]:
    parts.dumper.refresh(every=0.0)
    return json.loads(path.read_text())  # type: ignore[no-any-return]


def test_the_sentinel_never_rewrites_a_dump_the_watchdog_took_over(tmp_path: Path) -> None:
    parts = Parts(tmp_path, 0.5)
    path = parts.sentinel_dumps(2.5)
    first = json.loads(path.read_text())["blocked_for"]
    # Control: while the freeze goes on, the sentinel refreshes blocked_for.
    parts.dumper.start -= 5.0
    assert _refreshed(parts, path)["blocked_for"] > first + 4.0
    assert parts.gl.settle_sentinel_dumps(0.0, [(IDENT, parts.cfg)], 2.5, WHY) == [str(path)]
    completed = path.read_bytes()
    # The round after republishes the same answered beat (the loop has not run
    # the heartbeat yet): the takeover still stands.
    parts.sp.answered({IDENT: 41})
    parts.dumper.start -= 5.0
    doc = _refreshed(parts, path)
    assert path.read_bytes() == completed and doc["complete"] is True
    parts.dumper.reset(200.0)  # the next silence: a new freeze for the sentinel, not that one
    assert parts.dumper.loops[IDENT].path is None


def test_a_removed_dump_is_never_brought_back(tmp_path: Path) -> None:
    parts = Parts(tmp_path, 0.5)
    parts.sentinel_dumps(1.0)
    assert parts.gl.settle_sentinel_dumps(0.0, [(IDENT, parts.cfg)], 1.0, WHY) == []
    parts.dumper.start -= 5.0
    parts.dumper.refresh(every=0.0)
    assert list(parts.dump_dir.iterdir()) == []


def test_a_settled_count_never_reads_as_a_heartbeat(tmp_path: Path) -> None:
    """The answered slot carries both: the beat in its low bits, the takeovers above."""
    parts = Parts(tmp_path, 0.5)
    slot = lambda: struct.unpack_from("<Q", parts.sp._mm, _sentinel_main._ANSWERED)[0]  # noqa: E731
    assert slot() == 41
    parts.sp.settle(IDENT)
    assert slot() == 41 | 1 << 48
    parts.sp.answered({IDENT: 42})
    assert slot() == 42 | 1 << 48
    for _ in range(0x10000):  # wraps, never overflows the u64
        parts.sp.settle(IDENT)
    assert slot() == 42 | 1 << 48
