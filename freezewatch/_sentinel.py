"""The sentinel: a helper process that runs py-spy on us when no Python thread of ours can.

A C call that holds the GIL stops every Python thread of the process, the
watchdog included, so the watchdog cannot run py-spy during such a freeze.
The sentinel is a separate, tiny process (this file run as a script with
``python -I -S``: standard library only, no site, no freezewatch import)
started by the watchdog thread on its first round, one per process.

Shared state is a 256-byte page of anonymous shared memory (``memfd``)
mapped by both sides:

    offset 0   u64  heartbeat counter, bumped by the watchdog every round
    offset 8   f64  stand-down deadline (CLOCK_MONOTONIC, shared by all
                    processes): the watchdog is silent by choice (parked,
                    running py-spy itself, writing a dump)
    offset 16  f64  threshold
    offset 24  u64  captures written by the sentinel
    offset 32  u64  1 while the sentinel's py-spy runs
    offset 40  u64  1 while the sentinel signals loop threads
    offset 48  u64  the watchdog thread's native id
    offset 56  u64  number of loop threads (at most MAX_LOOPS)
    offset 64  u64  signal rounds completed by the sentinel
    offset 72  MAX_LOOPS x (u64 thread ident, u64 native id)

The sentinel wakes every ``threshold / 2`` s (0.05 to 0.5 s). When the
counter has not moved for half the threshold and ``/proc`` shows the
watchdog thread neither ran nor waited for a CPU meanwhile (it is blocked:
waiting for the GIL), it sends each loop thread the faulthandler signal
(``_faulthandler``): each writes its own Python stack into the file the
parent shares with the sentinel, under a ``Thread 0x<ident>`` header the
sentinel writes first. No ptrace is needed for this, only the right to
signal our own parent.

When the counter has not moved for ``threshold`` seconds (at least
MIN_SILENCE: on a loaded machine the watchdog can be late by a few hundred
milliseconds without any held GIL, and py-spy pauses the whole process, so
a sentinel that fired on such a delay would itself freeze the application)
it runs py-spy against the parent once (the time limit is enforced right
there, outside the frozen process: SIGINT, then SIGKILL to py-spy's process
group, then SIGCONT to the parent if it was left stopped) and writes
py-spy's raw output to ``native.json`` in a private 0700 directory. The
watchdog takes it from there when it runs again (``take``).

It exits when the parent does: the parent holds the write end of a pipe
(written only to wake the sentinel early, ``resume``); EOF on the read end
means the parent is gone (SIGKILL included). It also exits if it is
re-parented. It ignores SIGINT (a Ctrl-C in the terminal is for the
application).

Under Yama ``ptrace_scope = 1`` the parent names the sentinel with
``PR_SET_PTRACER`` right after spawning it; the permission covers the
sentinel's descendants, i.e. its py-spy.
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
import threading
import time

_LAYOUT = struct.Struct("<QddQQQQQQ")
_PAIR = struct.Struct("<QQ")
MAX_LOOPS = 8
_LOOPS_AT = 72
MIN_SILENCE = 1.0
"""Seconds of watchdog silence before the sentinel pauses the process with py-spy."""
_SIZE = 256
RESULT = "native.json"
STEADY_WINDOW = 0.03
"""A loop thread must not have slept (switched) for this long before it is signalled."""
_SETTLE = 0.005
"""A signalled thread's stack is complete once the file stopped growing this long."""

# Fds of the pipes to our sentinels: closed in a forked child, so that the
# parent's sentinel still sees EOF when the parent dies. Module-level because
# os.register_at_fork cannot be undone; touched only at start/close/fork.
_pipe_fds: set[int] = set()
_fork_hook = False


def _close_in_child() -> None:
    for fd in list(_pipe_fds):
        with contextlib.suppress(OSError):
            os.close(fd)
    _pipe_fds.clear()


def unavailable_reason(pyspy: str | None, signal_fd: int) -> str | None:
    """Why the sentinel cannot work here, or None if it can."""
    if not sys.platform.startswith("linux"):
        return f"the sentinel needs Linux (memfd, /proc), this is {sys.platform}"
    if not hasattr(os, "memfd_create"):
        return "the sentinel needs os.memfd_create"
    if signal_fd < 0 and (not pyspy or not os.access(pyspy, os.X_OK)):
        return ("py-spy not found (pip install py-spy) and the faulthandler layer is off: "
                "the sentinel has nothing to do")
    return None


def _usable(pyspy: str | None) -> bool:
    return bool(pyspy) and os.access(str(pyspy), os.X_OK)


class Sentinel:
    """Parent side: start, heartbeat, stand-down, results, stop (watchdog thread only)."""

    def __init__(self) -> None:
        self.proc: subprocess.Popen[bytes] | None = None
        self.error: str | None = None
        self._mm: mmap.mmap | None = None
        self._wfd = -1
        self._dir: str | None = None
        self._count = 0
        self._loops: tuple[tuple[int, int], ...] = ()
        self.limit = 5.0
        self.pyspy = False
        """The sentinel runs py-spy (False: it only signals loop threads)."""

    @property
    def pid(self) -> int:
        return self.proc.pid if self.proc is not None else 0

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def start(self, threshold: float, pyspy: str | None, limit: float,
              signal_fd: int = -1, signum: int = 0) -> bool:
        """Start the process; ``pyspy`` None: no native traces; ``signal_fd`` -1: no
        faulthandler signals (otherwise the file the handler writes to)."""
        global _fork_hook
        from ._snapshot.native import allow_ptracer, pyspy_argv

        reason = unavailable_reason(pyspy, signal_fd)
        if reason:
            self.error = reason
            return False
        self.pyspy = _usable(pyspy)
        self.limit = limit
        mfd = rfd = -1
        try:
            mfd = os.memfd_create("freezewatch-heartbeat")  # close-on-exec by default
            os.ftruncate(mfd, _SIZE)
            self._mm = mmap.mmap(mfd, _SIZE)
            _LAYOUT.pack_into(self._mm, 0, 0, 0.0, threshold, 0, 0, 0,
                              threading.get_native_id(), 0, 0)
            rfd, self._wfd = os.pipe()  # both non-inheritable; rfd is passed explicitly
            os.set_blocking(self._wfd, False)  # resume() never blocks its caller
            # Not tempfile.mkdtemp on this thread: its first use takes a
            # module lock, and a fork meanwhile would leave the child's
            # watchdog blocked on it. gettempdir() was cached at install.
            self._dir = os.path.join(tempfile.gettempdir(),
                                     f"freezewatch-sentinel-{os.getpid()}-{os.urandom(6).hex()}")
            os.mkdir(self._dir, 0o700)
            poll = max(0.05, min(0.5, threshold / 2))
            argv = [sys.executable, "-I", "-S", os.path.abspath(__file__), str(os.getpid()),
                    str(mfd), str(rfd), self._dir, f"{limit:g}", f"{poll:g}",
                    str(signal_fd), str(signum),
                    *(pyspy_argv(str(pyspy), os.getpid()) if self.pyspy else [])]
            fds = (mfd, rfd) if signal_fd < 0 else (mfd, rfd, signal_fd)
            self.proc = subprocess.Popen(argv, pass_fds=fds, stdin=subprocess.DEVNULL,
                                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        except (OSError, ValueError) as e:
            self.error = f"the sentinel could not start: {e}"
            self.close()
            return False
        finally:
            for fd in (mfd, rfd):
                if fd >= 0:
                    os.close(fd)
        # Yama: exactly this child (and its py-spy, a descendant) may attach.
        allow_ptracer(self.proc.pid)
        _pipe_fds.add(self._wfd)
        if not _fork_hook and hasattr(os, "register_at_fork"):
            _fork_hook = True
            os.register_at_fork(after_in_child=_close_in_child)
        return True

    def beat(self, threshold: float, next_within: float) -> None:
        """One watchdog round: bump the counter, and say the next beat comes within
        ``next_within`` s (silence counts only after that). Three stores."""
        mm = self._mm
        if mm is not None:
            self._count += 1
            struct.pack_into("<Q", mm, 0, self._count)
            struct.pack_into("<d", mm, 8, time.monotonic() + next_within)
            struct.pack_into("<d", mm, 16, threshold)

    def set_loops(self, loops: tuple[tuple[int, int], ...]) -> None:
        """The loop threads to signal: (thread ident, native id) pairs."""
        mm = self._mm
        if mm is None or loops == self._loops:
            return
        self._loops = loops
        loops = loops[:MAX_LOOPS]
        # Pairs first, count last: the sentinel reads the count, then the pairs.
        for i, (ident, native) in enumerate(loops):
            _PAIR.pack_into(mm, _LOOPS_AT + i * _PAIR.size, ident, native)
        struct.pack_into("<Q", mm, 56, len(loops))

    def signalling(self) -> bool:
        return self._mm is not None and struct.unpack_from("<Q", self._mm, 40)[0] == 1

    def signal_rounds(self) -> int:
        """Signal rounds the sentinel completed (a capture may be waiting when it moves)."""
        return struct.unpack_from("<Q", self._mm, 64)[0] if self._mm is not None else 0

    def wait_signalling(self, limit: float) -> None:
        deadline = time.monotonic() + limit
        while self.signalling() and time.monotonic() < deadline:
            time.sleep(0.005)

    def resume(self) -> None:
        """The silence announced last is cut short (a parked watchdog woken early, a
        py-spy run over): silence counts from now, and the sentinel, asleep until
        the announced end, is woken to see it (a byte on its pipe)."""
        self.stand_down(0.0)
        if self._wfd >= 0:
            with contextlib.suppress(OSError):  # full (it is being woken anyway) or closed
                os.write(self._wfd, b"!")

    def stand_down(self, seconds: float) -> None:
        """The watchdog is silent by choice for ``seconds`` from now (parked, running
        py-spy itself): silence counts only after that. 0: from now on."""
        if self._mm is not None:
            struct.pack_into("<d", self._mm, 8, time.monotonic() + seconds)

    def capturing(self) -> bool:
        return self._mm is not None and struct.unpack_from("<Q", self._mm, 32)[0] == 1

    def take(self, since: float, wait: float) -> dict[str, object] | None:
        """The sentinel's capture taken after ``since`` (monotonic), waiting up to
        ``wait`` s for one in progress; removed once taken."""
        if self._dir is None:
            return None
        deadline = time.monotonic() + wait
        while self.capturing() and time.monotonic() < deadline:
            time.sleep(0.02)
        path = os.path.join(self._dir, RESULT)
        try:
            with open(path, encoding="utf-8") as f:
                doc = json.load(f)
            os.unlink(path)
        except (OSError, ValueError):
            return None
        if not isinstance(doc, dict) or float(doc.get("taken_at", 0.0)) < since - 0.05:
            return None  # left from an earlier stall
        return doc

    def close(self) -> None:
        if self._wfd >= 0:
            _pipe_fds.discard(self._wfd)
            os.close(self._wfd)  # EOF: the sentinel exits on its own
            self._wfd = -1
        proc, self.proc = self.proc, None
        if proc is not None:
            try:
                proc.wait(1.0)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        if self._mm is not None:
            self._mm.close()
            self._mm = None
        if self._dir is not None:
            shutil.rmtree(self._dir, ignore_errors=True)
            self._dir = None


# -- the sentinel process itself ------------------------------------------------


def _stopped(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            return f.read().rsplit(b")", 1)[1].split()[0] in (b"T", b"t")
    except (OSError, IndexError):
        return False


def _run_pyspy(argv: list[str], limit: float, parent: int) -> tuple[int, str, str]:
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        p = subprocess.Popen(argv, stdout=out, stderr=err, stdin=subprocess.DEVNULL,
                             start_new_session=True)
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
        if _stopped(parent):
            os.kill(parent, signal.SIGCONT)
        out.seek(0)
        err.seek(0)
        return code, out.read().decode(errors="replace"), err.read().decode(errors="replace")


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


def _schedstat(parent: int, tid: int) -> tuple[float, float] | None:
    """(seconds on a CPU, seconds waiting for one) of a thread of ``parent``."""
    try:
        with open(f"/proc/{parent}/task/{tid}/schedstat", "rb") as f:
            ran, waited = f.read().split()[:2]
        return int(ran) / 1e9, int(waited) / 1e9
    except (OSError, ValueError):
        return None


def _in_futex(parent: int, tid: int) -> bool | None:
    """True/False if /proc says whether the thread sits in futex(2); None if unknown."""
    nr = _FUTEX.get(os.uname().machine)
    try:
        with open(f"/proc/{parent}/task/{tid}/syscall", "rb") as f:
            first = f.read().split()[0]
    except (OSError, IndexError):
        return None
    if nr is None:
        return None
    return first.isdigit() and int(first) == nr


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

    def dump(self, fd: int, loops: list[tuple[int, int]]) -> None:
        """Each loop thread writes its stack under a header naming it, one at a time.

        Only a thread that did not sleep over a short window is signalled: it
        held the GIL all along (a C call), or slept all along (waiting for the
        GIL, or for I/O). A thread that switches meanwhile may be running
        bytecode between GIL hand-offs (many threads competing for the GIL):
        interrupting bytecode with a faulthandler signal is what corrupts a
        3.10 interpreter now and then (docs/native.md)."""
        before_window = {tid: _switches(self.parent, tid) for _, tid in loops}
        time.sleep(STEADY_WINDOW)
        for ident, tid in loops:
            first = before_window.get(tid)
            if first is None or _switches(self.parent, tid) != first:
                continue
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
                return


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


def _next_wait(now: float, quiet_until: float, threshold: float, poll: float,
               signal_due: bool, pyspy_due: bool) -> float:
    """Seconds to sleep: until the watchdog's announced quiet plus the silence
    that makes the next action due, at least ``poll`` (and at most 5 s: the
    parent's death wakes us anyway, through the pipe)."""
    if signal_due:
        due = quiet_until + threshold / 2
    elif pyspy_due:
        due = quiet_until + max(threshold, MIN_SILENCE)
    else:
        return poll  # nothing left for this silence: watch for the next one
    return min(5.0, max(poll, due - now))


def _loops(mm: mmap.mmap) -> list[tuple[int, int]]:
    n = min(MAX_LOOPS, struct.unpack_from("<Q", mm, 56)[0])
    return [_PAIR.unpack_from(mm, _LOOPS_AT + i * _PAIR.size) for i in range(n)]


def main(argv: list[str]) -> int:
    parent, mfd, rfd = int(argv[0]), int(argv[1]), int(argv[2])
    directory, limit, poll = argv[3], float(argv[4]), float(argv[5])
    signal_fd, signum, pyspy = int(argv[6]), int(argv[7]), argv[8:]
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    mm = mmap.mmap(mfd, _SIZE)
    signaller = _Signaller(parent, signum) if signal_fd >= 0 and signum else None
    last = -1
    changed_at = quiet_until = time.monotonic()  # the last beat; silence counts from quiet_until
    base: tuple[float, float] | None = None  # the watchdog's schedstat at its last beat
    signalled = pyspy_done = False
    captures = rounds = 0
    wait = poll
    try:
        while True:
            ready, _, _ = select.select([rfd], [], [], wait)
            if ready and not os.read(rfd, 64):
                return 0  # EOF: the parent is gone (or closed us); a byte: resume()
            if os.getppid() != parent:
                return 0  # re-parented: the parent died
            count, stand_down, threshold, _, _, _, wd_tid, _, _ = _LAYOUT.unpack_from(mm, 0)
            now = time.monotonic()
            if count != last:
                last, changed_at, signalled, pyspy_done = count, now, False, False
                base = _schedstat(parent, wd_tid) if signaller and wd_tid else None
            # The watchdog says how long it means to sleep (or to be busy on
            # purpose): silence counts only after that.
            quiet_until = max(changed_at, stand_down)
            silence = now - quiet_until
            if silence <= 0:
                wait = _next_wait(now, quiet_until, threshold, poll,
                                  signaller is not None, bool(pyspy))
                continue
            if (signaller is not None and not signalled and silence >= threshold / 2
                    and _watchdog_blocked(parent, wd_tid, base, silence)):
                # The GIL is held: every loop thread's Python stack, now.
                signalled = True
                struct.pack_into("<Q", mm, 40, 1)
                try:
                    signaller.dump(signal_fd, _loops(mm))
                finally:
                    rounds += 1
                    struct.pack_into("<Q", mm, 64, rounds)
                    struct.pack_into("<Q", mm, 40, 0)
            # Sleep until the next moment something could be due (the watchdog
            # announces its sleeps, so an idle one costs few wake-ups here).
            wait = _next_wait(now, quiet_until, threshold, poll,
                              signaller is not None and not signalled,
                              bool(pyspy) and not pyspy_done)
            if not pyspy or pyspy_done or silence < max(threshold, MIN_SILENCE):
                continue
            # The watchdog has been silent for a threshold: take the native
            # trace now, while whatever holds the GIL still holds it.
            pyspy_done = True
            struct.pack_into("<Q", mm, 32, 1)
            taken_at = time.monotonic()
            code, out, err = _run_pyspy(pyspy, limit, parent)
            captures += 1
            _write_result(directory, {"taken_at": taken_at, "ended_at": time.monotonic(),
                                      "silent_for": taken_at - quiet_until, "code": code,
                                      "stdout": out, "stderr": err, "limit": limit})
            struct.pack_into("<Q", mm, 24, captures)
            struct.pack_into("<Q", mm, 32, 0)
    finally:
        shutil.rmtree(directory, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
