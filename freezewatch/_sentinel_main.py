"""The sentinel process itself: run as ``python -I -S _sentinel_main.py ...``.

Standard library only, no site, no freezewatch import (its two helpers,
``_sentinel_freeze`` and ``_sentinel_dump``, are stdlib-only files beside it):
it must start fast and must not depend on anything the application's
environment may break. The parent side is ``_sentinel``; the layout of the
shared page is defined here, once. See ``_sentinel`` for what it does and why.
"""

from __future__ import annotations

import contextlib
import json
import mmap
import os
import select
import shutil
import signal
import struct
import subprocess
import sys
import tempfile
import time
from typing import Any

_LAYOUT = struct.Struct("<QddQQQQQQ")
_PAIR = struct.Struct("<QQ")
MAX_LOOPS = 8
_LOOPS_AT = 72
MIN_SILENCE = 1.0
"""Seconds of watchdog silence before the sentinel pauses the process with py-spy."""
# The page's later fields (see ``_sentinel`` for all of it), u64 each:
_OK_TO_SIGNAL = 200  # 1 while the faulthandler handler is still ours (``_sigcheck``)
_SEQ = 208  # the last dump sequence number taken, by the watchdog or the sentinel
_CONFIG_GEN = 216  # bumped by the parent each time it rewrites config.json
_DUMPS = 224  # dumps written by the sentinel
_OPEN = 232  # 1 while the watchdog has a freeze open (declared live: its dumps)
_SINCE = 240  # f64: since when (monotonic) the watchdog was silent at the last signal round
_ANSWERED = 256  # MAX_LOOPS of them, aligned with the pairs: last answered beats
_SIZE = 512
RESULT = "native.json"
MAX_OUTPUT = 256 * 1024  # bytes of py-spy output read (_snapshot.native.MAX_OUTPUT)
STEADY_WINDOW = 0.03  # s a loop thread must not have slept (switched) before it is signalled
_SETTLE = 0.005  # s: a signalled thread's stack is complete once its file stopped growing


def _stopped(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            return f.read().rsplit(b")", 1)[1].split()[0] in (b"T", b"t")
    except (OSError, IndexError):
        return False


def _run_pyspy(argv: list[str], limit: float, parent: int) -> tuple[int, str, str, bool]:
    stopped_before = _stopped(parent)
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        # Files, not pipes: py-spy stops the parent, never us; read back bounded.
        try:
            p = subprocess.Popen(argv, stdout=out, stderr=err, stdin=subprocess.DEVNULL,
                                 start_new_session=True)
        except OSError as e:  # removed or replaced since install() (a package upgrade)
            return 127, "", f"py-spy not found or not runnable: {e}", False
        try:
            code = p.wait(limit)
        except subprocess.TimeoutExpired:
            code = 124
            for sig, grace in ((signal.SIGINT, 1.0), (signal.SIGKILL, 5.0)):
                with contextlib.suppress(OSError):
                    os.killpg(p.pid, sig)
                try:
                    p.wait(grace)
                    break
                except subprocess.TimeoutExpired:
                    pass
        # Continue only a stop py-spy itself left behind (it was killed while
        # the parent was ptrace-stopped): never one somebody else made.
        if not stopped_before and _stopped(parent):
            os.kill(parent, signal.SIGCONT)
        over = os.fstat(out.fileno()).st_size > MAX_OUTPUT
        out.seek(0)
        err.seek(0)
        return (code, out.read(MAX_OUTPUT).decode(errors="replace"),
                err.read(MAX_OUTPUT).decode(errors="replace"), over)


def _write_result(directory: str, doc: dict[str, object]) -> None:
    tmp = os.path.join(directory, RESULT + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        json.dump(doc, f)
    os.replace(tmp, os.path.join(directory, RESULT))


# futex(2) by machine: a thread blocked in it waits for the GIL (or a lock).
_FUTEX = {"x86_64": 202, "aarch64": 98, "i686": 240, "armv7l": 240, "ppc64le": 221,
          "s390x": 238, "riscv64": 98}
_TGKILL = {"x86_64": 234, "aarch64": 131, "i686": 270, "armv7l": 268, "ppc64le": 250,
           "s390x": 241, "riscv64": 131}


_FDS: dict[str, int] = {}  # /proc files read again and again: opened once, then pread


def _schedstat(parent: int, tid: int) -> tuple[float, float] | None:
    """(seconds on a CPU, seconds waiting for one) of a thread of ``parent``."""
    path = f"/proc/{parent}/task/{tid}/schedstat"
    try:
        if (fd := _FDS.get(path)) is None:
            fd = _FDS[path] = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        ran, waited = os.pread(fd, 128, 0).split()[:2]
        return int(ran) / 1e9, int(waited) / 1e9
    except (OSError, ValueError):
        with contextlib.suppress(OSError, TypeError):  # that thread is gone
            os.close(_FDS.pop(path, None))  # type: ignore[arg-type]
        return None


def _in_futex(parent: int, tid: int) -> bool | None:
    """True/False if /proc says whether the thread sits in futex(2); None if unknown."""
    nr = _FUTEX.get(os.uname().machine)
    try:
        with open(f"/proc/{parent}/task/{tid}/syscall", "rb") as f:
            first = f.read().split()[0]
    except (OSError, IndexError):
        return None
    return None if nr is None else first.isdigit() and int(first) == nr


def _watchdog_blocked(parent: int, tid: int, base: tuple[float, float] | None,
                      silence: float) -> bool:
    """The watchdog thread neither ran nor queued for a CPU through most of its
    silence, and sits in futex(2): it waits for the GIL, which no thread
    running bytecode keeps for long (it hands it over within the switch
    interval). Only then is it safe to interrupt a loop thread."""
    now = _schedstat(parent, tid) if tid else None
    if now is None or base is None:
        return False
    ran, waited = now[0] - base[0], now[1] - base[1]
    if ran + waited > 0.25 * silence:
        return False  # it ran (long Python work) or was starved of a CPU
    return _in_futex(parent, tid) is not False


class _Signaller:
    """Sends the faulthandler signal to one thread of the parent (``tgkill``)."""

    def __init__(self, parent: int, signum: int) -> None:
        self.parent, self.signum = parent, signum
        self._fn: object = None

    def _tgkill(self, tid: int) -> bool:
        import ctypes  # only when needed: most sentinels never signal

        if self._fn is None:
            libc = ctypes.CDLL(None, use_errno=True)
            fn = getattr(libc, "tgkill", None)  # glibc >= 2.30
            nr = _TGKILL.get(os.uname().machine)
            if fn is None and nr is not None:
                def fn(pid: int, t: int, sig: int, _sc: object = libc.syscall) -> int:
                    return int(_sc(nr, pid, t, sig))  # type: ignore[operator]
            self._fn = fn or False
        if not self._fn:
            return False
        return int(self._fn(self.parent, tid, self.signum)) == 0  # type: ignore[operator]

    def dump(self, fd: int, loops: list[tuple[int, int]], mm: mmap.mmap) -> str:
        """Each loop thread writes its stack under a header naming it, one at a time;
        returns what they wrote (the parent reads the same file later).

        Only a thread that did not sleep over a short window is signalled (it
        held the GIL all along, or slept all along): one that switches may run
        bytecode between GIL hand-offs, and a signal there corrupts a 3.10
        interpreter now and then (docs/native.md). Sent only while the signal
        is still ours: the parent says so (``_OK_TO_SIGNAL``, its
        ``_sigcheck.Claim``) and the kernel shows it caught (``caught``) right
        before each send (SIG_DFL since would kill the parent)."""
        before_window = {tid: _switches(self.parent, tid) for _, tid in loops}
        time.sleep(STEADY_WINDOW)
        try:
            start = os.fstat(fd).st_size
        except OSError:
            return ""
        for ident, tid in loops:
            first = before_window.get(tid)
            if first is None or _switches(self.parent, tid) != first:
                continue
            if struct.unpack_from("<Q", mm, _OK_TO_SIGNAL)[0] != 1 \
                    or caught(self.parent, self.signum) is not True:
                return ""
            try:
                before = os.fstat(fd).st_size
                os.write(fd, f"Thread 0x{ident:x} (most recent call first):\n".encode())
                if not self._tgkill(tid):
                    continue
                size, stable_since, deadline = -1, 0.0, time.monotonic() + 0.2
                while time.monotonic() < deadline:
                    cur = os.fstat(fd).st_size
                    now = time.monotonic()
                    if cur != size:
                        size, stable_since = cur, now
                    elif cur > before and now - stable_since >= _SETTLE:
                        break
                    time.sleep(0.001)
            except OSError:
                break
        try:
            end = os.fstat(fd).st_size
            return os.pread(fd, min(end - start, 1 << 20), start).decode("utf-8", "replace")
        except OSError:
            return ""


def caught(pid: int, signum: int) -> bool | None:
    """``pid`` catches ``signum`` (``_sigcheck.caught``, duplicated: stdlib only here)."""
    with contextlib.suppress(OSError, ValueError, IndexError), \
            open(f"/proc/{pid}/status", "rb") as f:
        for line in f:
            if line.startswith(b"SigCgt:"):
                return bool(int(line.split()[1], 16) >> (signum - 1) & 1)
    return None


def _switches(parent: int, tid: int) -> int | None:
    """Voluntary context switches of a thread of ``parent`` (None: unknown)."""
    try:
        with open(f"/proc/{parent}/task/{tid}/status", "rb") as f:
            for line in f:
                if line.startswith(b"voluntary_ctxt_switches:"):
                    return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        pass
    return None


def _next_wait(now: float, poll: float, *dues: float | None) -> float:
    """Seconds to sleep: until the next action is due (the watchdog announces its
    quiet), at least ``poll``, at most 30 s (the parent's death wakes us anyway)."""
    due = [d for d in dues if d is not None]
    return poll if not due else min(30.0, max(poll, min(due) - now))


def _take_seq(mm: mmap.mmap) -> int:  # the next dump number (``_sentinel.SharedSeq``)
    struct.pack_into("<Q", mm, _SEQ, n := int(struct.unpack_from("<Q", mm, _SEQ)[0]) + 1)
    return n


def _helpers() -> Any:
    """``_sentinel_freeze`` (and the ``_sentinel_dump`` it uses), stdlib-only files next
    to this one: this directory is appended to sys.path (last: it never shadows
    the standard library)."""
    here = os.path.dirname(os.path.abspath(__file__))
    if here not in sys.path:
        sys.path.append(here)
    import _sentinel_freeze  # type: ignore[import-not-found]

    return _sentinel_freeze


def _loops(mm: mmap.mmap) -> list[tuple[int, int]]:
    n = min(MAX_LOOPS, struct.unpack_from("<Q", mm, 56)[0])
    return [_PAIR.unpack_from(mm, _LOOPS_AT + i * _PAIR.size) for i in range(n)]


def main(argv: list[str]) -> int:
    parent, mfd, rfd = int(argv[0]), int(argv[1]), int(argv[2])
    directory, limit, poll = argv[3], float(argv[4]), float(argv[5])
    signal_fd, signum, pyspy = int(argv[6]), int(argv[7]), argv[8:]
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    mm, helpers = mmap.mmap(mfd, _SIZE), _helpers()
    signaller = _Signaller(parent, signum) if signal_fd >= 0 and signum else None
    def answered(ident: int) -> int | None:
        at = [_ANSWERED + 8 * i for i, (idt, _) in enumerate(_loops(mm)) if idt == ident]
        return int(struct.unpack_from("<Q", mm, at[0])[0]) if at else None

    dumper = helpers.Dumper(parent, directory, lambda: _take_seq(mm),
                            lambda tid: _switches(parent, tid), answered)
    dumper.recapture = (lambda: signaller.dump(signal_fd, _loops(mm), mm)) if signaller else None
    last = gen = -1
    changed_at = quiet_until = time.monotonic()  # the last beat; silence counts from quiet_until
    base: tuple[float, float] | None = None  # the watchdog's schedstat at its last beat
    signalled, pyspy_done, captures, rounds, wait = False, False, 0, 0, poll

    def still(count: int) -> bool:  # no beat since ``count``: the watchdog is still silent
        return int(struct.unpack_from("<Q", mm, 0)[0]) == count
    def busy(flag: int, on: bool) -> None:  # flag 32: py-spy or a dump write; 40: signals
        struct.pack_into("<Q", mm, flag, 1 if on else 0)

    def native_now() -> tuple[dict[str, object], dict[str, object]]:
        busy(32, True)  # the caller clears it
        switches = dumper.before_native()  # did each loop thread sleep in this silence?
        taken_at = time.monotonic()
        code, out, err, over = _run_pyspy(pyspy, limit, parent)
        return ({"taken_at": taken_at, "ended_at": time.monotonic(), "code": code,
                 "silent_for": taken_at - quiet_until, "stdout": out, "stderr": err,
                 "limit": limit, "over": over, "switches": switches}, helpers.dump.native(
                    code, out, err, limit, over))

    try:
        while True:
            ready, _, _ = select.select([rfd], [], [], wait)
            if ready and not os.read(rfd, 64):
                return 0  # EOF: the parent is gone (or closed us); a byte: resume()
            if os.getppid() != parent:
                return 0  # re-parented: the parent died
            count, stand_down, threshold, _, _, _, wd_tid, _, _ = _LAYOUT.unpack_from(mm, 0)
            now = time.monotonic()
            if struct.unpack_from("<Q", mm, _CONFIG_GEN)[0] != gen:
                gen = struct.unpack_from("<Q", mm, _CONFIG_GEN)[0]
                dumper.reload()
            if count != last:
                last, changed_at, signalled, pyspy_done, base = count, now, False, False, None
                dumper.reset(changed_at)
            if base is None and wd_tid:  # install() may start us before the watchdog runs
                base = _schedstat(parent, wd_tid)
            # The watchdog says how long it means to sleep (or to be busy on
            # purpose): silence counts only after that.
            quiet_until = max(changed_at, stand_down)
            silence = now - quiet_until
            if silence > 0 and _stopped(parent):
                # Stopped by somebody (SIGSTOP, ctrl-Z, a debugger): a silent
                # watchdog, but no freeze. Neither signal nor pause it; its
                # stop stands until whoever stopped it continues it.
                changed_at = quiet_until = now
                dumper.reset(now)
                wait = poll
                continue
            if silence <= 0:
                wait = _next_wait(now, poll, quiet_until + threshold / 2 if signaller else None,
                                  quiet_until + max(threshold, MIN_SILENCE) if pyspy else None)
                continue
            blocked = wd_tid and _watchdog_blocked(parent, wd_tid, base, silence)
            dumper.look()  # each loop thread's switches, once a silence (see native())
            if signaller is not None and not signalled and silence >= threshold / 2 and blocked:
                # The GIL is held: every loop thread's Python stack, now.
                signalled = True
                busy(40, True)
                try:
                    text = signaller.dump(signal_fd, _loops(mm), mm)
                finally:
                    rounds += 1
                    struct.pack_into("<d", mm, _SINCE, quiet_until)  # before the round count
                    struct.pack_into("<Q", mm, 64, rounds)
                    busy(40, False)
                if text:
                    dumper.captured(text)
            if signalled and silence >= threshold / 2:
                # Silent for a threshold, still blocked, the loop still in the call
                # it was captured in: the dump, now (the watchdog waits on flag 32).
                busy(32, True)
                try:
                    open_ = struct.unpack_from("<Q", mm, _OPEN)[0] == 1
                    dumper.first(silence, bool(blocked) and still(count) and not open_,
                                 bool(pyspy) and not pyspy_done)
                finally:
                    busy(32, False)
            if pyspy and not pyspy_done and silence >= max(threshold, MIN_SILENCE):
                # The watchdog has been silent for a threshold: take the native
                # trace now, while whatever holds the GIL still holds it.
                pyspy_done = True
                try:
                    result, nat = native_now()
                    if still(count):  # into the sentinel's dumps, before the watchdog looks
                        dumper.native(nat, time.monotonic() - quiet_until,
                                      struct.unpack_from("<Q", mm, _OPEN)[0] != 1)
                    captures += 1
                    _write_result(directory, result)
                    struct.pack_into("<Q", mm, 24, captures)
                finally:
                    busy(32, False)
            busy(32, True)
            try:
                refresh = dumper.refresh() if still(count) else None
            finally:
                busy(32, False)
            due = dumper.next_update()
            if due is not None and time.monotonic() >= due and still(count):
                text = signaller.dump(signal_fd, _loops(mm), mm) if signaller else ""
                fresh: dict[str, object] | None = None
                if pyspy:
                    try:
                        fresh = native_now()[1]
                    finally:
                        busy(32, False)
                dumper.update(text, fresh)
                due = dumper.next_update()
            struct.pack_into("<Q", mm, _DUMPS, dumper.written)
            now = time.monotonic()
            wait = _next_wait(
                now, poll, quiet_until + threshold / 2 if signaller and not signalled else None,
                quiet_until + max(threshold, MIN_SILENCE) if pyspy and not pyspy_done else None,
                quiet_until + threshold if signalled and not any(
                    lp.path for lp in dumper.loops.values()) and now < quiet_until + threshold
                else None, due, refresh)
    finally:
        shutil.rmtree(directory, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
