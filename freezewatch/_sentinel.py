"""The sentinel: a helper process that runs py-spy on us when no Python thread of ours can.

A C call that holds the GIL stops every Python thread of the process, the
watchdog included, so the watchdog cannot run py-spy during such a freeze.
The sentinel is a separate, tiny process (this file run as a script with
``python -I -S``: standard library only, no site, no freezewatch import)
started by the watchdog thread on its first round, one per process.

Shared state is a 64-byte page of anonymous shared memory (``memfd``) mapped
by both sides:

    offset 0   u64  heartbeat counter, bumped by the watchdog every round
    offset 8   f64  stand-down deadline (CLOCK_MONOTONIC, shared by all
                    processes): the watchdog is running py-spy itself
    offset 16  f64  threshold
    offset 24  u64  captures written by the sentinel
    offset 32  u64  1 while the sentinel's py-spy runs

The sentinel wakes every ``threshold / 2`` s (0.05 to 0.5 s). When the
counter has not moved for ``threshold`` seconds (at least MIN_SILENCE: on a
loaded machine the watchdog can be late by a few hundred milliseconds
without any held GIL, and py-spy pauses the whole process, so a sentinel that
fired on such a delay would itself freeze the application) it runs py-spy against the
parent once (the time limit is enforced right there, outside the frozen
process: SIGINT, then SIGKILL to py-spy's process group, then SIGCONT to the
parent if it was left stopped) and writes py-spy's raw output to
``native.json`` in a private 0700 directory. The watchdog takes it from there
when it runs again (``take``).

It exits when the parent does: the parent holds the write end of a pipe
that nobody writes; EOF on the read end means the parent is gone (SIGKILL
included). It also exits if it is re-parented. It ignores SIGINT (a Ctrl-C
in the terminal is for the application).

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
import time

_LAYOUT = struct.Struct("<QddQQ")
MIN_SILENCE = 1.0
"""Seconds of watchdog silence before the sentinel pauses the process with py-spy."""
_SIZE = 64
RESULT = "native.json"

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


def unavailable_reason(pyspy: str | None) -> str | None:
    """Why the sentinel cannot work here, or None if it can."""
    if not sys.platform.startswith("linux"):
        return f"the sentinel needs Linux (memfd, /proc), this is {sys.platform}"
    if not hasattr(os, "memfd_create"):
        return "the sentinel needs os.memfd_create"
    if not pyspy or not os.access(pyspy, os.X_OK):
        return "py-spy not found: pip install py-spy"
    return None


class Sentinel:
    """Parent side: start, heartbeat, stand-down, results, stop (watchdog thread only)."""

    def __init__(self) -> None:
        self.proc: subprocess.Popen[bytes] | None = None
        self.error: str | None = None
        self._mm: mmap.mmap | None = None
        self._wfd = -1
        self._dir: str | None = None
        self._count = 0
        self.limit = 5.0

    @property
    def pid(self) -> int:
        return self.proc.pid if self.proc is not None else 0

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def start(self, threshold: float, pyspy: str | None, limit: float) -> bool:
        global _fork_hook
        from ._snapshot.native import allow_ptracer, pyspy_argv

        reason = unavailable_reason(pyspy)
        if reason:
            self.error = reason
            return False
        assert pyspy is not None
        self.limit = limit
        mfd = rfd = -1
        try:
            mfd = os.memfd_create("freezewatch-heartbeat")  # close-on-exec by default
            os.ftruncate(mfd, _SIZE)
            self._mm = mmap.mmap(mfd, _SIZE)
            _LAYOUT.pack_into(self._mm, 0, 0, 0.0, threshold, 0, 0)
            rfd, self._wfd = os.pipe()  # both non-inheritable; rfd is passed explicitly
            self._dir = tempfile.mkdtemp(prefix="freezewatch-sentinel-")
            poll = max(0.05, min(0.5, threshold / 2))
            argv = [sys.executable, "-I", "-S", os.path.abspath(__file__), str(os.getpid()),
                    str(mfd), str(rfd), self._dir, f"{limit:g}", f"{poll:g}",
                    *pyspy_argv(pyspy, os.getpid())]
            self.proc = subprocess.Popen(argv, pass_fds=(mfd, rfd), stdin=subprocess.DEVNULL,
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

    def beat(self, threshold: float) -> None:
        """One watchdog round: bump the counter (two stores into shared memory)."""
        mm = self._mm
        if mm is not None:
            self._count += 1
            struct.pack_into("<Q", mm, 0, self._count)
            struct.pack_into("<d", mm, 16, threshold)

    def stand_down(self, seconds: float) -> None:
        """The watchdog runs py-spy itself for up to ``seconds``: do not interfere."""
        if self._mm is not None:
            struct.pack_into("<d", self._mm, 8, time.monotonic() + seconds if seconds else 0.0)

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


def main(argv: list[str]) -> int:
    parent, mfd, rfd = int(argv[0]), int(argv[1]), int(argv[2])
    directory, limit, poll, pyspy = argv[3], float(argv[4]), float(argv[5]), argv[6:]
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    mm = mmap.mmap(mfd, _SIZE)
    last = -1
    last_change = time.monotonic()
    done_for_this_stall = False
    captures = 0
    try:
        while True:
            ready, _, _ = select.select([rfd], [], [], poll)
            if ready and not os.read(rfd, 64):
                return 0  # EOF: the parent is gone (or closed us)
            if os.getppid() != parent:
                return 0  # re-parented: the parent died
            count, stand_down, threshold, _, _ = _LAYOUT.unpack_from(mm, 0)
            now = time.monotonic()
            if count != last or stand_down > now:
                last, last_change, done_for_this_stall = count, now, False
                continue
            if done_for_this_stall or now - last_change < max(threshold, MIN_SILENCE):
                continue
            # The watchdog has been silent for a threshold: take the native
            # trace now, while whatever holds the GIL still holds it.
            done_for_this_stall = True
            struct.pack_into("<Q", mm, 32, 1)
            taken_at = time.monotonic()
            code, out, err = _run_pyspy(pyspy, limit, parent)
            captures += 1
            _write_result(directory, {"taken_at": taken_at, "ended_at": time.monotonic(),
                                      "silent_for": taken_at - last_change, "code": code,
                                      "stdout": out, "stderr": err, "limit": limit})
            struct.pack_into("<Q", mm, 24, captures)
            struct.pack_into("<Q", mm, 32, 0)
    finally:
        shutil.rmtree(directory, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
