"""py-spy in real deployments: JSON frames, absent, hanging, Yama, and the sentinel's life."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import pytest
from conftest import ROOT, assert_contract, dumps, wait_for
from core_support import pin

import freezewatch
from freezewatch import _config, _state
from freezewatch._snapshot import native as native_mod
from freezewatch._snapshot.model import NATIVE_PENDING

PYSPY = native_mod.find_pyspy()


def _freeze(dump_dir: Path, seconds: float, **settings: Any) -> None:
    async def main() -> None:
        freezewatch.install(threshold=0.3, interval=0.05, dump_dir=str(dump_dir), **settings)
        await asyncio.sleep(0.2)
        time.sleep(seconds)  # pin: sleep
        await asyncio.sleep(0.2)

    asyncio.run(main())


def _final_dump(dump_dir: Path) -> dict[str, Any]:
    """The freeze dump once its native part was filled in (the file is rewritten)."""

    def ready() -> dict[str, Any] | None:
        paths = dumps(dump_dir)
        if not paths:
            return None
        doc = assert_contract(paths[0])
        return doc if doc["native"]["error"] != NATIVE_PENDING.error else None

    return wait_for(ready, 20)  # type: ignore[no-any-return]


def _state_of(pid: int) -> str | None:
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            return f.read().rsplit(b")", 1)[1].split()[0].decode()
    except (OSError, IndexError):
        return None


@pytest.mark.skipif(PYSPY is None, reason="py-spy is not installed")
def test_live_freeze_has_structured_native_frames(dump_dir: Path, events: Any) -> None:
    """A live freeze's dump has py-spy's JSON frames; the .txt shows the loop's native stack."""
    _freeze(dump_dir, 2.0)
    events.wait("freeze_ended")
    doc = _final_dump(dump_dir)
    native = doc["native"]
    assert native["ok"], native["error"]
    assert native["source"] == "watchdog"
    (loop,) = [t for t in native["threads"] if t["thread_id"] == doc["loop"]["thread_id"]]
    py = [f for f in loop["frames"] if not f["native"]]
    sleep = pin(__file__, "sleep")
    assert (py[-1]["file"], py[-1]["line"]) == (sleep.file, sleep.line)  # outermost first
    assert any("sleep" in f["function"] for f in loop["frames"] if f["native"])
    txt = dumps(dump_dir)[0].with_suffix(".txt").read_text()
    section = txt[txt.index("Loop thread stack"):txt.index("\nTasks:")]
    assert "Loop thread native stack (py-spy" in section
    assert f"main ({sleep.file}:{sleep.line})" in section


def test_pyspy_missing_rejected_at_install(dump_dir: Path) -> None:
    """pyspy_path naming no file: ValueError at install, naming the setting and value."""
    with pytest.raises(ValueError, match=r"pyspy_path .*no such file.*'/nonexistent/py-spy'"):
        _config.load({"pyspy_path": "/nonexistent/py-spy", "dump_dir": str(dump_dir)})


def test_pyspy_gone_after_install_dump_still_written(dump_dir: Path, events: Any,
                                                      tmp_path: Path) -> None:
    """py-spy removed after install: the dump is written, native.ok false with what to do."""
    fake = tmp_path / "py-spy"
    fake.write_text("#!/bin/sh\nexit 0\n")
    fake.chmod(0o755)

    async def main() -> None:
        freezewatch.install(threshold=0.3, interval=0.05, dump_dir=str(dump_dir),
                            pyspy_path=str(fake))
        fake.unlink()
        await asyncio.sleep(0.2)
        time.sleep(1.0)  # pin: gone
        await asyncio.sleep(0.2)

    asyncio.run(main())
    events.wait("freeze_ended")
    doc = _final_dump(dump_dir)
    assert doc["native"]["ok"] is False
    assert f"py-spy not found at {str(fake)!r}" in doc["native"]["error"]
    assert "pip install py-spy" in doc["native"]["error"]
    assert doc["blocking_frame"]["line"] == pin(__file__, "gone").line


def test_pyspy_absent_from_interpreter_dir_and_path(tmp_path: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """No py-spy beside the interpreter nor on PATH: found as None, capture says why."""
    # An interpreter directory without py-spy cannot be had without copying
    # Python itself: point sys.executable at an empty directory instead.
    monkeypatch.setattr(sys, "executable", str(tmp_path / "python"))
    monkeypatch.setenv("PATH", str(tmp_path))
    assert native_mod.find_pyspy() is None
    result = native_mod.capture_native(os.getpid(), None, 1.0)
    assert result.ok is False
    assert result.error is not None and "py-spy not found next to" in result.error


def test_hanging_pyspy_killed_and_process_resumed(dump_dir: Path, events: Any,
                                                  tmp_path: Path) -> None:
    """A py-spy that stops us and hangs is killed from outside within the limit; we resume."""
    fake = tmp_path / "py-spy"
    marker = "61.4142"
    # argv: dump --pid PID --native --json. Stop the target like a tracer
    # would, then hang; a child (sleep) keeps the output pipe open.
    fake.write_text(f'#!/bin/sh\nkill -STOP "$3"\nsleep {marker}\n')
    fake.chmod(0o755)
    t0 = time.monotonic()
    _freeze(dump_dir, 1.0, pyspy_path=str(fake), native_timeout=1.0)
    events.wait("freeze_ended")
    doc = _final_dump(dump_dir)
    took = time.monotonic() - t0
    assert doc["native"]["ok"] is False
    assert "timed out after 1 s" in doc["native"]["error"]
    assert took < 1.0 + 1.0 + 8.0  # freeze + limit + SIGINT grace, generous for a busy box
    assert _state_of(os.getpid()) not in ("T", "t")

    def left() -> list[str]:
        found = []
        for pid in filter(str.isdigit, os.listdir("/proc")):
            try:
                if marker in Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace"):
                    found.append(pid)
            except OSError:
                pass
        return found

    # The whole process group goes, not just the shell. py-spy runs off the
    # watchdog thread, so its kill (SIGINT, a grace, SIGKILL) may still be under
    # way when the freeze's end is reported: wait for it, boundedly.
    wait_for(lambda: left() == [], timeout=10)


def test_ptracer_names_exactly_the_supervisor_before_it_starts_pyspy(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """PR_SET_PTRACER names the supervisor's pid before py-spy exists, then is handed back."""
    if PYSPY is None:
        pytest.skip("py-spy is not installed")
    calls: list[tuple[int, list[str]]] = []
    real = native_mod.allow_ptracer

    def recording(pid: int) -> bool:
        # Without Yama the kernel ignores PR_SET_PTRACER, so the effect cannot be
        # observed here: record which pid was named, and what it was running.
        kids: list[str] = []
        if pid and Path(f"/proc/{pid}").exists():
            for task in Path(f"/proc/{pid}/task").iterdir():
                kids += (task / "children").read_text().split()
        calls.append((pid, kids))
        return real(pid)

    monkeypatch.setattr(native_mod, "allow_ptracer", recording)
    result = native_mod.capture_native(os.getpid(), PYSPY, 5.0, ptracer_after=4242)
    assert result.ok, result.error
    (named, kids), (after, _) = calls
    assert named not in (0, -1, os.getpid()) and kids == []  # py-spy not started yet
    assert after == 4242


def test_yama_ptrace_scope_one_allows_our_pyspy() -> None:
    """Under Yama ptrace_scope=1, the named supervisor's py-spy may attach to us."""
    scope = native_mod.yama_scope()
    if scope is None:
        pytest.skip("this kernel has no Yama LSM (/proc/sys/kernel/yama is absent), so "
                    "ptrace_scope=1 cannot be reproduced; PR_SET_PTRACER is still issued "
                    "(see test_ptracer_names_exactly_the_supervisor_before_it_starts_pyspy)")
    if scope != 1:
        pytest.skip(f"kernel.yama.ptrace_scope={scope}: the case PR_SET_PTRACER solves is 1")
    if PYSPY is None:
        pytest.skip("py-spy is not installed")
    result = native_mod.capture_native(os.getpid(), PYSPY, 5.0)
    assert result.ok, result.error


_CHILD = textwrap.dedent("""\
    import asyncio, os, sys, time
    sys.path.insert(0, {root!r})
    import freezewatch
    from freezewatch import _state

    async def main():
        freezewatch.install(threshold=0.5, dump_dir={dump!r})
        while True:
            wd = _state.watchdog
            sp = wd.gil.sentinel if wd else None
            if sp is not None and sp.alive():
                print(sp.pid, sp._dir, flush=True)
                break
            await asyncio.sleep(0.05)
        await asyncio.sleep(60)

    asyncio.run(main())
""")


@pytest.mark.skipif(PYSPY is None, reason="py-spy is not installed (no sentinel without it)")
def test_sentinel_exits_when_parent_is_sigkilled(tmp_path: Path) -> None:
    """SIGKILL the application: its sentinel exits too and removes its directory (no orphan)."""
    code = _CHILD.format(root=str(ROOT), dump=str(tmp_path / "dumps"))
    app = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    try:
        assert app.stdout is not None
        pid_s, directory = app.stdout.readline().split()
        sentinel = int(pid_s)
        assert _state_of(sentinel) not in (None, "Z")
        assert Path(directory).is_dir()
    finally:
        app.kill()
        app.wait()
        if app.stdout is not None:
            app.stdout.close()
    wait_for(lambda: _state_of(sentinel) in (None, "Z"), 10)
    wait_for(lambda: not Path(directory).exists(), 5)


@pytest.mark.skipif(PYSPY is None, reason="py-spy is not installed (no sentinel without it)")
def test_sentinel_idle_cost_and_off_switch(dump_dir: Path) -> None:
    """The sentinel idles at well under 1% of a CPU; sentinel=False starts none."""

    async def main(**settings: Any) -> tuple[int, float]:
        freezewatch.install(threshold=0.5, interval=0.05, dump_dir=str(dump_dir), **settings)
        await asyncio.sleep(0.3)
        wd = _state.watchdog
        assert wd is not None
        sp = wd.gil.sentinel
        if not sp.alive():
            return 0, 0.0
        hz = os.sysconf("SC_CLK_TCK")

        def cpu() -> float:
            fields = Path(f"/proc/{sp.pid}/stat").read_text().rsplit(")", 1)[1].split()
            return (int(fields[11]) + int(fields[12])) / hz  # utime + stime

        c0, t0 = cpu(), time.monotonic()
        await asyncio.sleep(3.0)
        return sp.pid, (cpu() - c0) / (time.monotonic() - t0)

    pid, share = asyncio.run(main())
    assert pid and share < 0.01, share
    freezewatch.uninstall()
    wait_for(lambda: _state_of(pid) in (None, "Z"), 5)  # uninstall lets it go
    pid_off, _ = asyncio.run(main(sentinel=False))
    assert pid_off == 0
    kw = {"dump_dir": str(dump_dir)}
    assert _config.load(kw, {"FREEZEWATCH_SENTINEL": "0"}).sentinel is False
    assert _config.load(kw, {"FREEZEWATCH_FAULTHANDLER": "off"}).faulthandler is False



N_BACK_TO_BACK = 12
_BACK_TO_BACK = "\n".join(
    ["async def back_to_back(asyncio, time):"]
    + [f"    time.sleep(0.5)  # pin: b{i}\n    await asyncio.sleep(0.15)"
       for i in range(N_BACK_TO_BACK)])


def test_back_to_back_freezes_while_pyspy_runs_are_each_detected(tmp_path: Path,
                                                                  events: Any) -> None:
    """py-spy runs for every freeze (native on); freezes at distinct lines 0.15 s apart,
    each longer than the threshold: every one is detected and pinned (py-spy runs off
    the watchdog thread, which keeps watching meanwhile)."""
    dump_dir = tmp_path / "dumps"
    src = tmp_path / "back_to_back.py"
    src.write_text(_BACK_TO_BACK + "\n")
    namespace: dict[str, Any] = {}
    exec(compile(src.read_text(), str(src), "exec"), namespace)

    async def main() -> None:
        freezewatch.install(threshold=0.3, interval=0.05, dump_dir=str(dump_dir), native=True)
        await asyncio.sleep(0.2)
        await namespace["back_to_back"](asyncio, time)
        await asyncio.sleep(0.5)

    asyncio.run(main())
    wait_for(lambda: len(events.named("freeze_ended")) >= N_BACK_TO_BACK, 30)
    lines = sorted(assert_contract(p)["blocking_frame"]["line"] for p in dumps(dump_dir))
    assert lines == sorted(pin(src, f"b{i}").line for i in range(N_BACK_TO_BACK))
