"""A faulthandler timer that captures every Python stack when no Python thread can run.

``faulthandler.dump_traceback_later`` waits in a C thread that needs no GIL;
when its timeout expires it writes every thread's Python stack to a file
descriptor. The watchdog thread re-arms it ahead of its deadline, so it
fires only when the watchdog itself could not run for about half the
threshold: a C call holding the GIL (or the whole process stopped). The
watchdog reads the capture when it runs again and folds it into a normal
freeze dump (``_loopwatch``).

Cost: one re-arm (cancel + start of the C thread, ~50-60 us, GIL held) every
``threshold / 2`` seconds, on the watchdog thread - never on the loop.

The output goes to an unlinked temporary file (mode 0600, no name: nobody
else can open it), never to the application's stderr.

faulthandler has a single timer per process and no way to ask whether it is
armed. An application that arms it itself *after* install() is detected (the
module's two timer functions are wrapped, transparently; a cancel alone is
passed through and ours is re-armed on the next round): freezewatch logs
``faulthandler_conflict`` and stops re-arming for the rest of the process, so
the application's timer keeps working. A timer armed *before* install() is
invisible: set ``faulthandler=False`` (``FREEZEWATCH_FAULTHANDLER=0``).
"""

from __future__ import annotations

import faulthandler
import os
import re
import tempfile
from collections.abc import Callable
from typing import IO, Any

from ._snapshot.frames import source_line
from ._snapshot.model import Frame

_THREAD = re.compile(r"^(?:Current thread|Thread) (0x[0-9a-fA-F]+)")
_FRAME = re.compile(r'^\s+File "(.*)", line (\d+) in (.+?)\s*$')
MAX_CAPTURE = 1 << 20

# -- the wrappers that notice an application's own use of the timer ----------
# Set once per process. Module-level because faulthandler's timer is itself
# process-global; read without a lock (a single bool store is atomic).
_real_arm = faulthandler.dump_traceback_later
_real_cancel = faulthandler.cancel_dump_traceback_later
_app_took_over = False
_on_conflict: Callable[[str], None] | None = None
_wrapped = False
_armed_pid = 0  # the pid whose faulthandler thread we armed and have not cancelled


def _app_arm(*args: Any, **kwargs: Any) -> None:
    _yield_to_app("dump_traceback_later")
    _real_arm(*args, **kwargs)


def _app_cancel() -> None:
    # Cancelling asks for no timer, which ours (silent, private file) honours
    # well enough: not a conflict. It did cancel ours: re-arm next round.
    global _armed_pid
    _armed_pid = 0
    _real_cancel()


def _yield_to_app(what: str) -> None:
    global _app_took_over, _armed_pid
    first = not _app_took_over
    _app_took_over = True
    _armed_pid = 0  # the timer is the application's from now on
    cb = _on_conflict
    if first and cb is not None:
        cb(f"the application called faulthandler.{what}(); freezewatch's faulthandler layer "
           "is off for this process so the application's timer keeps working "
           "(GIL-held freezes are no longer pinned; FREEZEWATCH_FAULTHANDLER=0 silences this)")


def _wrap_once() -> None:
    global _wrapped
    if _wrapped:
        return
    _wrapped = True
    # No public API tells whether the timer is armed, so the two module
    # functions are replaced by pass-through wrappers that only take note.
    faulthandler.dump_traceback_later = _app_arm  # type: ignore[assignment]
    faulthandler.cancel_dump_traceback_later = _app_cancel
    if hasattr(os, "register_at_fork"):
        # A fork while our C thread waits leaves its lock held in the child,
        # where the next arm or cancel then hangs forever (checked on 3.10-3.13).
        # Cancel before the fork; the watchdog re-arms in its next round.
        os.register_at_fork(before=_cancel_before_fork)


def _cancel_before_fork() -> None:
    global _armed_pid
    if _armed_pid == os.getpid() and not _app_took_over:
        _real_cancel()
        _armed_pid = 0


class Timer:
    """The re-armed faulthandler timer and its private output file (watchdog thread only)."""

    def __init__(self, on_conflict: Callable[[str], None]) -> None:
        global _on_conflict
        self._file: IO[bytes] | None = None
        self._armed_at = -1e9
        self._retry_at = 0.0
        self.rearms = 0
        self.error: str | None = None
        _on_conflict = on_conflict

    @property
    def active(self) -> bool:
        return self._file is not None and not _app_took_over

    def tick(self, now: float, threshold: float) -> None:
        """Re-arm if half the threshold passed since the last arm.

        Armed for ``threshold`` seconds and re-armed every ``threshold / 2``:
        it fires only if the watchdog could not run for at least half the
        threshold, between 0.5 and 1.0 threshold after the watchdog's last
        round - well inside a freeze that lasts longer than the threshold.
        """
        global _armed_pid
        if _app_took_over:
            return
        pid = os.getpid()
        if _armed_pid not in (0, pid):
            return  # armed in the parent before a fork we did not see: do not touch
        if _armed_pid == pid and now - self._armed_at < threshold / 2:
            return
        if self._file is None and now < self._retry_at:
            return
        if self._file is None:
            try:
                _wrap_once()
                # Lives as long as the timer: faulthandler writes to it from C.
                self._file = tempfile.TemporaryFile(prefix="freezewatch-fh-")  # noqa: SIM115
            except OSError as e:
                self.error = f"no private file for faulthandler: {e}"
                self._retry_at = now + 60.0
                return
        self._armed_at = now
        self.rearms += 1
        _armed_pid = pid
        _real_arm(threshold, repeat=False, file=self._file, exit=False)

    def take(self) -> str | None:
        """The capture written since the last call, or None (the file is emptied)."""
        f = self._file
        if f is None:
            return None
        fd = f.fileno()
        try:
            if os.fstat(fd).st_size == 0:
                return None
            data = os.pread(fd, MAX_CAPTURE, 0)
            os.ftruncate(fd, 0)
            os.lseek(fd, 0, os.SEEK_SET)
        except OSError:
            return None
        return data.decode("utf-8", "replace")

    def close(self) -> None:
        global _armed_pid
        if _armed_pid == os.getpid() and not _app_took_over:
            _real_cancel()
            _armed_pid = 0
        if self._file is not None:
            self._file.close()
            self._file = None


def parse(text: str) -> dict[int, tuple[Frame, ...]]:
    """faulthandler's text -> thread ident -> frames, outermost first.

    faulthandler prints ``File "...", line N in func`` without the source line;
    ``code`` is filled from linecache.
    """
    stacks: dict[int, list[Frame]] = {}
    current: list[Frame] | None = None
    for line in text.splitlines():
        m = _THREAD.match(line)
        if m:
            current = stacks.setdefault(int(m.group(1), 16), [])
            continue
        m = _FRAME.match(line)
        if m and current is not None:
            path, lineno, func = m.group(1), int(m.group(2)), m.group(3)
            if path and not path.startswith("<"):
                path = os.path.abspath(path)
            current.append(Frame(path, lineno, func, source_line(path, lineno)))
    return {tid: tuple(reversed(frames)) for tid, frames in stacks.items()}


class Capture:
    """One faulthandler capture, parsed: when the watchdog read it (monotonic), and for
    how long the watchdog had been silent then."""

    def __init__(self, text: str, read_at: float, silent: float) -> None:
        self.text = text
        self.read_at = read_at
        self.silent = silent
        """Seconds the watchdog had not run before it read this capture."""
        self.stacks = parse(text)

    def frames_of(self, thread_id: int | None) -> tuple[Frame, ...] | None:
        if thread_id is None:
            return None
        return self.stacks.get(thread_id) or None
