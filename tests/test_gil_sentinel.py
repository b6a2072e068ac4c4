"""The sentinel writes the dump of a freeze no Python thread can see, while it lasts.

Each test runs the application in a subprocess (tests/gil_app.py) and watches
its dump directory from outside: a GIL-held freeze must leave its dump
before the blocking call returns, and a process killed in it must leave one
too. Also: a process stopped by someone else stays stopped; freezewatch's
signal is sent only while its disposition is still freezewatch's.
"""

from __future__ import annotations

import contextlib
import gc
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from conftest import assert_contract, dumps, wait_for
from core_support import pin
from test_gil import _calibrate

APP = Path(__file__).with_name("gil_app.py")
pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="Linux: /proc")


def _start(tmp_path: Path, mode: str, arg: int,
           **more_env: str) -> tuple[subprocess.Popen[str], Path]:
    dump_dir = tmp_path / "dumps"
    env = {**os.environ, "PYTHONWARNINGS": "error", **more_env}
    proc = subprocess.Popen([sys.executable, str(APP), str(dump_dir), mode, str(arg)],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env=env)
    return proc, dump_dir


def _finish(proc: subprocess.Popen[str], timeout: float = 60) -> str:
    try:
        out, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, _ = proc.communicate()
        raise
    return out


def _sentinel_dump_before_return(tmp_path: Path, mode: str, arg: int, marker: str,
                                 watchdog_may_see: bool = False,
                                 meanwhile: Callable[[subprocess.Popen[str]], None] | None = None,
                                 log: list[str] | None = None) -> dict[str, Any]:
    """Run ``mode``; the sentinel's dump must exist before the call returned; it is
    pinned on the line marked ``marker`` in gil_app.py, and completed afterwards.

    ``watchdog_may_see``: the call lets Python run now and then (a garbage
    collection inside ``json.loads`` calls freezewatch's gc hook, and the
    watchdog gets the GIL there): the watchdog may see the freeze live and
    write the dump itself, before the call returns too."""
    proc, dump_dir = _start(tmp_path, mode, arg)
    markers = tmp_path / "markers"
    first: list[Path] = []
    try:
        if meanwhile is not None:
            meanwhile(proc)
        wait_for(lambda: (markers / "started").exists(), 30, 0.01)
        got = wait_for(lambda: dumps(dump_dir, kind="freeze") or (
            "returned" if (markers / "returned").exists() else None), 30, 0.01)
        first = got if isinstance(got, list) else dumps(dump_dir, kind="freeze")
        returned_before = (markers / "returned").exists()
        early = json.loads(first[0].read_text()) if first else {}
    finally:
        out = _finish(proc)
        if log is not None:
            log.append(out)  # what the app printed (its events)
    assert proc.returncode == 0, out
    assert first, f"no dump before the call returned: {out}"
    if returned_before:
        took = float((markers / "returned").read_text()) - float(
            (markers / "started").read_text())
        pytest.fail(f"the call returned ({took:.2f} s) before any dump was written")
    file, line, code = pin(str(APP), marker)
    if watchdog_may_see and "written_by" not in early:
        assert early["app_frame"]["line"] == line and early["app_frame"]["code"] == code, out
        doc = assert_contract(first[0])
        assert doc["duration"] > 0.3
        return doc
    assert early.get("written_by") == "sentinel" and early["complete"] is False, out
    assert early["gil_held"] is True
    af = early["app_frame"]
    assert (af["file"], af["line"], af["code"]) == (file, line, code)
    if mode != "json":  # json.loads: the innermost frame is json's own raw_decode
        assert early["blocking_frame"] == af
    assert early["kernel"]["state"] and early["kernel"]["read_by"] == "sentinel"
    (path,) = dumps(dump_dir, kind="freeze")
    assert path.name == first[0].name  # completed under the same name, no second dump
    doc = assert_contract(path)
    if "process_suspended" in out:
        pytest.skip("the machine was overloaded: the watchdog voided the freeze (re-run)")
    assert doc["complete"] is True and doc["duration"] > 0.3, out
    assert doc["tasks"] and doc["app_frame"]["line"] == line
    assert doc["detected_at"] == early["detected_at"]
    return doc


@pytest.mark.timeout(40)
def test_regex_dump_is_written_while_it_holds_the_gil(tmp_path: Path) -> None:
    n = len(_calibrate(3.0)) - 1
    doc = _sentinel_dump_before_return(tmp_path, "regex", n, "regex")
    assert doc["cause"] == "GIL held"


def _sentinels(pid: int) -> list[int]:
    """The app's sentinel processes (its children running _sentinel_main.py)."""
    out = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        with contextlib.suppress(OSError):
            for child in (task / "children").read_text().split():
                with contextlib.suppress(OSError):
                    if b"_sentinel_main.py" in Path(f"/proc/{child}/cmdline").read_bytes():
                        out.append(int(child))
    return out


@pytest.mark.timeout(60)
def test_a_sentinel_killed_under_the_app_is_replaced(tmp_path: Path) -> None:
    """The sentinel SIGKILLed (an operator, the OOM killer): an error event says so,
    a new sentinel starts, and the next GIL-held freeze leaves its dump while it
    lasts, written by the new one."""
    n = len(_calibrate(2.0)) - 1
    killed: list[int] = []

    def kill_it(proc: subprocess.Popen[str]) -> None:
        killed.extend(wait_for(lambda: _sentinels(proc.pid), 30, 0.02))
        os.kill(killed[0], signal.SIGKILL)
        markers = tmp_path / "markers"
        markers.mkdir(exist_ok=True)
        (markers / "killed").write_text("1")
        new = wait_for(lambda: [p for p in _sentinels(proc.pid) if p not in killed], 10, 0.02)
        assert new and killed[0] not in new

    out: list[str] = []
    doc = _sentinel_dump_before_return(tmp_path, "restart", n, "regex", meanwhile=kill_it,
                                       log=out)
    assert doc["cause"] == "GIL held"
    assert out and "sentinel_exited" in out[0] and "status -9" in out[0], out
    assert "a new one is started" in out[0]


@pytest.mark.timeout(60)
def test_gc_collect_dump_is_written_while_it_holds_the_gil(tmp_path: Path) -> None:
    """A full collection of a heap sized here to take >= 1.5 s (adaptive: the machine
    decides how many objects that is, at most 8 M)."""
    per = [{"a": []} for _ in range(500_000)]
    t0 = time.perf_counter()
    gc.collect()
    took = time.perf_counter() - t0
    del per
    n = min(8_000_000, int(500_000 * 1.5 / max(took, 1e-3)))
    if n * took / 500_000 < 1.0:
        pytest.skip(f"a collection of 8 M objects would take only {n * took / 5e5:.2f} s")
    _sentinel_dump_before_return(tmp_path, "gc", n, "gc")


@pytest.mark.timeout(60)
def test_json_loads_dump_is_written_while_it_holds_the_gil(tmp_path: Path) -> None:
    """``json.loads`` of a document sized here to take >= 1.5 s."""
    doc = json.dumps([[i, str(i), {"k": i}] for i in range(100_000)])
    t0 = time.perf_counter()
    json.loads(doc)
    took = time.perf_counter() - t0
    n = min(3_000_000, int(100_000 * 1.5 / max(took, 1e-3)))
    _sentinel_dump_before_return(tmp_path, "json", n, "json", watchdog_may_see=True)


@pytest.mark.timeout(40)
def test_killed_in_an_endless_gil_freeze_leaves_its_dump(tmp_path: Path) -> None:
    """A regex that would run for hours, SIGKILLed 6 s after it started: the dump is
    there, pinned, incomplete, and conforms."""
    proc, dump_dir = _start(tmp_path, "regex", 40)
    markers = tmp_path / "markers"
    try:
        wait_for(lambda: (markers / "started").exists(), 30, 0.01)
        time.sleep(6.0)
    finally:
        proc.kill()
        _finish(proc)
    (path,) = dumps(dump_dir, kind="freeze")
    doc = assert_contract(path)
    file, line, _ = pin(str(APP), "regex")
    assert (doc["blocking_frame"]["file"], doc["blocking_frame"]["line"]) == (file, line)
    assert doc["complete"] is False and doc["gil_held"] is True
    assert doc["native"]["ok"], doc["native"]["error"]  # py-spy's stack was added
    assert "duration" not in doc
    assert doc["blocked_for"] >= 3.0  # kept growing while it lasted (6 s)
    assert path.with_suffix(".txt").read_text().startswith("FREEZE: event loop 'MainThread'")


@pytest.mark.timeout(40)
def test_a_freeze_that_goes_on_gets_updates_from_the_sentinel(tmp_path: Path) -> None:
    """update_after 1.5 s, 3 s: the sentinel writes two freeze-update dumps while the
    GIL stays held, each naming the first dump, with the next sequence numbers."""
    proc, dump_dir = _start(tmp_path, "regex", 40, FREEZEWATCH_UPDATE_AFTER="1.5,3")
    markers = tmp_path / "markers"
    try:
        wait_for(lambda: (markers / "started").exists(), 30, 0.01)
        with contextlib.suppress(AssertionError):  # said below, with the output
            wait_for(lambda: len(dumps(dump_dir, kind="freeze")) >= 3, 20, 0.05)
    finally:
        proc.kill()
        out = _finish(proc)
    assert len(dumps(dump_dir, kind="freeze")) >= 3, (out, dumps(dump_dir))
    first, *updates = (assert_contract(p) for p in dumps(dump_dir, kind="freeze"))
    names = [p.name for p in dumps(dump_dir, kind="freeze")]
    assert first["kind"] == "freeze" and [u["kind"] for u in updates] == ["freeze-update"] * 2
    assert all(u["first_dump"] == names[0] and u["frame_moved"] is False for u in updates)
    assert [u["update"] for u in updates] == [1, 2]
    assert [int(n.rsplit("-", 1)[1][:-5]) for n in names] == [1, 2, 3]
    assert updates[1]["blocked_for"] > updates[0]["blocked_for"] >= 1.0


def _state_of(pid: int) -> str:
    with open(f"/proc/{pid}/stat", "rb") as f:
        return f.read().rsplit(b")", 1)[1].split()[0].decode()


@pytest.mark.timeout(40)
def test_a_stopped_process_stays_stopped(tmp_path: Path) -> None:
    """SIGSTOP for 4 s: the process is in state T all along (polled every 50 ms from
    here), and no freeze dump is written."""
    proc, dump_dir = _start(tmp_path, "idle", 8)
    markers = tmp_path / "markers"
    try:
        wait_for(lambda: (markers / "started").exists(), 30, 0.01)
        time.sleep(0.5)
        os.kill(proc.pid, signal.SIGSTOP)
        wait_for(lambda: _state_of(proc.pid) == "T", 5, 0.01)
        seen = set()
        end = time.monotonic() + 4.0
        while time.monotonic() < end:
            seen.add(_state_of(proc.pid))
            time.sleep(0.05)
        os.kill(proc.pid, signal.SIGCONT)
    finally:
        out = _finish(proc)
    assert seen == {"T"}, f"states seen while stopped: {seen}"
    assert proc.returncode == 0, out
    assert dumps(dump_dir, kind="freeze") == []


@pytest.mark.timeout(40)
@pytest.mark.parametrize("mode", ["sigdfl", "own"])
def test_a_signal_no_longer_ours_is_never_sent(mode: str, tmp_path: Path) -> None:
    """The app resets freezewatch's signal to SIG_DFL (a send would kill it), or takes it
    with its own handler, after install(); then a regex holds the GIL: the process is
    not killed, its handler is never called, and the freeze is still dumped (py-spy)."""
    n = len(_calibrate(2.5)) - 1
    proc, dump_dir = _start(tmp_path, mode, n)
    out = _finish(proc)
    assert proc.returncode == 0, out  # not "Real-time signal 27" (exit 189 / -61)
    assert "faulthandler_conflict" in out and "after install()" in out
    if mode == "own":
        assert "@@ own handler called 0 times" in out
    (path,) = dumps(dump_dir, kind="freeze")
    doc = assert_contract(path)
    file, line, _ = pin(str(APP), "regex")
    assert (doc["blocking_frame"]["file"], doc["blocking_frame"]["line"]) == (file, line)
    assert doc["captured_by"] == "py-spy (sentinel)"


def test_stale_sentinel_directories_of_dead_processes_are_removed(tmp_path: Path) -> None:
    from freezewatch._sentinel_share import remove_stale_dirs

    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    stale = tmp_path / f"freezewatch-sentinel-{dead.pid}-{'ab' * 6}"
    alive = tmp_path / f"freezewatch-sentinel-{os.getppid()}-{'cd' * 6}"
    other = tmp_path / f"freezewatch-sentinel-{dead.pid}-nothex"
    for d in (stale, alive, other):
        d.mkdir()
        (d / "native.json").write_text("{}")
    link = tmp_path / f"freezewatch-sentinel-{dead.pid}-{'ef' * 6}"
    link.symlink_to(alive)
    assert remove_stale_dirs(str(tmp_path)) == 1
    assert not stale.exists() and alive.exists() and other.exists()
    assert link.is_symlink() and (alive / "native.json").exists()  # never followed


def test_shared_sequence_numbers_never_repeat() -> None:
    import mmap

    from freezewatch import _sentinel_main
    from freezewatch._sentinel_share import SharedSeq

    mm = mmap.mmap(-1, _sentinel_main._SIZE)
    seq = SharedSeq(mm, 6)
    got = [next(seq), _sentinel_main._take_seq(mm), next(seq), _sentinel_main._take_seq(mm)]
    assert got == [7, 8, 9, 10] and seq.last() == 10


def test_sentinel_dump_never_replaces_a_file_it_did_not_write(tmp_path: Path) -> None:
    """A name taken meanwhile (by the watchdog) is skipped; the pair conforms."""
    from freezewatch import _sentinel_dump

    d = tmp_path / "dumps"
    d.mkdir(mode=0o700)
    doc = {"kind": "freeze", "detected_at": time.time(), "pid": os.getpid()}
    taken = _sentinel_dump.dump_name("freeze", doc["detected_at"], os.getpid(), 1)
    (d / f"{taken}.txt").write_text("the watchdog's\n")
    seqs = iter([1, 2])
    full = {**doc, "schema": "freezewatch/1", "hostname": "h", "python": "3",
            "loop": {"name": "l", "thread_id": 1, "thread_name": "t"}, "blocked_for": 1.0,
            "threshold": 0.5, "blocking_frame": {"file": "/a.py", "line": 3, "function": "f",
                                                 "code": None},
            "app_frame": None, "loop_thread": {"frames": []}, "current_task": None,
            "tasks": [], "threads": [], "inflight": [], "native": _sentinel_dump.PENDING,
            "cause": "GIL held", "kernel_summary": "x", "gil_held": True,
            "captured_by": "faulthandler", "complete": False}
    path = _sentinel_dump.write_pair(str(d), full, lambda: next(seqs))
    assert path.endswith("-0002.json")
    assert (d / f"{taken}.txt").read_text() == "the watchdog's\n"
    assert_contract(path)
    assert not [p for p in d.iterdir() if p.name.startswith(".")]  # no temporary left


def test_sentinel_reads_pyspy_output_bounded() -> None:
    from freezewatch import _sentinel_dump, _sentinel_main

    argv = [sys.executable, "-c", "import sys; sys.stdout.write('x' * 3_000_000)"]
    code, out, _err, over = _sentinel_main._run_pyspy(argv, 10.0, os.getpid())
    assert code == 0 and over and len(out) == _sentinel_main.MAX_OUTPUT
    nat = _sentinel_dump.native(code, out, "", 10.0, over)
    assert nat["ok"] is False and "exceeded" in nat["error"] and nat["text"] is None
