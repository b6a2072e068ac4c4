"""faulthandler's stack of a loop thread, taken inside a freeze that holds the GIL.

A C call that holds the GIL stops every Python thread, the watchdog
included. The sentinel process (``_sentinel``) notices that the watchdog
stopped beating while it was neither running nor waiting for a CPU (it is
blocked: waiting for the GIL) and sends each watched loop thread the signal
``SIGNAL`` with ``tgkill``. faulthandler's C handler for that signal
(``faulthandler.register(SIGNAL, all_threads=False)``) runs *on the loop
thread itself*, interrupting the C call, and writes that thread's Python
stack to a private file. The watchdog reads it when it runs again and
folds it into a normal freeze dump (``_pipeline``).

Why a signal and not ``faulthandler.dump_traceback_later`` (a timer thread
re-armed ahead of its deadline): the timer's thread walks *every* thread's
frames without the GIL whenever it fires, and it also fires when the
watchdog is merely late (a loaded machine) while other threads run Python.
Here that read frames being torn down and crashed the process (SIGSEGV in
``dump_frame``, 3.11). The signal handler reads only the stack of the thread
it interrupts, which cannot change while the handler runs, and only when
the sentinel found the watchdog blocked for half a threshold - which a
thread running bytecode cannot cause (it hands the GIL over within the
switch interval). It costs nothing while all is well: no timer, no re-arm.

The sentinel writes ``Thread 0x<ident> (most recent call first):`` before
each signal, so the file reads like faulthandler's all-threads output and
``parse`` maps each stack to its thread.

The output goes to an anonymous in-memory file (``memfd``: no name, nobody
else can open it; the sentinel gets the descriptor), never to the
application's stderr. Not ``tempfile``: its first use takes a module lock,
and a fork while the watchdog holds it would leave the child's watchdog
blocked forever.

faulthandler keeps one handler per signal. freezewatch does not take
``SIGNAL`` if a handler is already set for it, and an application that
registers it with faulthandler afterwards gets it (``faulthandler.register``
and ``unregister`` are wrapped, transparently, to notice): freezewatch logs
``faulthandler_conflict`` and leaves the signal alone for the rest of the
process. The application's own ``faulthandler.dump_traceback_later`` and
``faulthandler.enable`` are untouched.
"""

from __future__ import annotations

import faulthandler
import os
import re
import signal
from collections.abc import Callable
from typing import Any

from . import _state
from ._sigcheck import Claim, handler_of
from ._snapshot.frames import source_line
from ._snapshot.model import Frame

SIGNAL = signal.SIGRTMAX - 3 if hasattr(signal, "SIGRTMAX") else 0
"""The real-time signal the sentinel sends a loop thread (61 on Linux/glibc)."""

_THREAD = re.compile(r"^(?:Current thread|Thread) (0x[0-9a-fA-F]+)")
_FRAME = re.compile(r'^\s+File "(.*)", line (\d+) in (.+?)\s*$')
MAX_CAPTURE = 1 << 20

# -- the wrappers that notice an application's own use of the signal ----------
# Set once per process: faulthandler's handlers are process-global. Read
# without a lock (single stores of a bool/int are atomic under the GIL).
_real_register = faulthandler.register
_real_unregister = faulthandler.unregister
_FH = _state.faulthandler
"""app_took_over, on_conflict, registered_pid (the pid in which our handler is registered)."""


def _signum(sig: Any) -> int:
    try:
        return int(sig)
    except (TypeError, ValueError):
        return -1


def _app_register(signum: Any, *args: Any, **kwargs: Any) -> None:
    if _signum(signum) == SIGNAL:
        _yield_to_app(f"the application called faulthandler.register() for signal {SIGNAL}")
    _real_register(signum, *args, **kwargs)


def _app_unregister(signum: Any) -> Any:
    if _signum(signum) == SIGNAL:
        _yield_to_app(f"the application called faulthandler.unregister() for signal {SIGNAL}")
    return _real_unregister(signum)  # type: ignore[func-returns-value]  # a bool at run time


def _yield_to_app(what: str) -> None:
    """The application uses SIGNAL (``what`` says how): leave it alone for good."""
    first = not _FH["app_took_over"]
    _FH["app_took_over"] = True
    _FH["registered_pid"] = 0  # the signal is the application's from now on
    cb = _FH["on_conflict"]
    if first and cb is not None:
        cb(f"{what}, the signal freezewatch's faulthandler layer uses; the layer is off "
           "for this process (GIL-held freezes are still pinned by py-spy where it can "
           "attach; FREEZEWATCH_FAULTHANDLER=0 silences this)")


def _wrap_once() -> None:
    if _state.faulthandler_wrapped:
        return
    _state.faulthandler_wrapped = True
    faulthandler.register = _app_register  # type: ignore[assignment]
    faulthandler.unregister = _app_unregister  # type: ignore[assignment]


def release_app_claim() -> None:
    """Forget that the application took the signal, and unregister whatever
    handler it set there (tests: the next test's process starts afresh)."""
    if _FH["app_took_over"]:
        _real_unregister(SIGNAL)
    _FH["app_took_over"] = False
    _FH["registered_pid"] = 0


def unavailable_reason() -> str | None:
    """Why the layer cannot work here (None if it can)."""
    if not SIGNAL or not hasattr(faulthandler, "register") or not hasattr(os, "memfd_create"):
        return ("faulthandler.register, real-time signals or memfd_create are missing on "
                "this platform")
    if _FH["app_took_over"]:
        return f"the application uses signal {SIGNAL} with faulthandler"
    return None


class SignalDump:
    """Our faulthandler handler and its private output file (watchdog thread only)."""

    def __init__(self, on_conflict: Callable[[str], None]) -> None:
        self._fd = -1
        self.error: str | None = None
        self.claim: Claim | None = None
        """The signal's handler as registered (``_sigcheck``): sent only while it holds."""
        _FH["on_conflict"] = on_conflict

    @property
    def active(self) -> bool:
        return self._fd >= 0 and not _FH["app_took_over"]

    @property
    def fd(self) -> int:
        """The output file's descriptor (the sentinel writes thread headers to it), or -1."""
        return self._fd if self.active else -1

    def ensure(self) -> bool:
        """Register the handler once per process; True when it is in place."""
        if self.active and _FH["registered_pid"] == os.getpid():
            return True
        if self.error is not None:
            return False
        self.error = unavailable_reason()
        if self.error is not None:
            return False
        current = signal.getsignal(SIGNAL)
        if current not in (signal.SIG_DFL, 0) and _FH["registered_pid"] == 0:
            # Somebody handles this signal already (signal.signal or C code):
            # never take it from them.
            self.error = f"signal {SIGNAL} already has a handler in this process"
            _yield_to_app(self.error)
            return False
        try:
            _wrap_once()
            if self._fd < 0:
                # Lives as long as the handler: faulthandler writes to it from C.
                self._fd = os.memfd_create("freezewatch-faulthandler")  # close-on-exec
            _real_register(SIGNAL, file=self._fd, all_threads=False, chain=False)
        except (OSError, RuntimeError, ValueError) as e:
            self.error = f"faulthandler.register failed: {e}"
            return False
        _FH["registered_pid"] = os.getpid()
        self.claim = Claim.take(int(SIGNAL))
        if self.claim is None:
            self.error = (f"the kernel's handler of signal {SIGNAL} cannot be read (sigaction): "
                          "the signal is never sent")
            return False
        return True

    def still_ours(self) -> bool:
        """The signal's disposition is still our handler: checked before each round of
        signals. When it is not (the application reset it to SIG_DFL, or installed its
        own handler with ``signal.signal`` or C code), the layer is off for good, and
        ``faulthandler_conflict`` says why: a send could kill the process, or call the
        application's handler."""
        if not self.active or self.claim is None:
            return False
        if self.claim.still_ours():
            return True
        now = handler_of(int(SIGNAL), self.claim.libc)
        what = {0: "reset to SIG_DFL (a send would kill the process)",
                1: "set to SIG_IGN"}.get(now or 0, "given another handler") \
            if now is not None else "unreadable"
        _yield_to_app(f"the disposition of signal {SIGNAL} was {what} after install()")
        return False

    def take(self) -> str | None:
        """The capture written since the last call, or None (the file is emptied)."""
        fd = self._fd
        if fd < 0:
            return None
        try:
            if os.fstat(fd).st_size == 0:
                return None
            data = os.pread(fd, MAX_CAPTURE, 0)
            # The sentinel shares this open file (and its offset): the next
            # capture starts at 0 again.
            os.ftruncate(fd, 0)
            os.lseek(fd, 0, os.SEEK_SET)
        except OSError:
            return None
        return data.decode("utf-8", "replace")

    def close(self) -> None:
        if _FH["registered_pid"] == os.getpid() and not _FH["app_took_over"]:
            _real_unregister(SIGNAL)
            _FH["registered_pid"] = 0
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1


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
            # A thread captured twice (a freeze-update's capture): its latest stack.
            current = stacks[int(m.group(1), 16)] = []
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

    def __init__(self, text: str, read_at: float, silent: float,
                 slept: frozenset[int] = frozenset()) -> None:
        self.text = text
        self.read_at = read_at
        self.silent = silent
        """Seconds the watchdog had not run before it read this capture."""
        self.slept = slept
        """Loop threads seen switching after it, the watchdog still blocked: busy loops."""
        self.stacks = parse(text)

    def frames_of(self, thread_id: int | None) -> tuple[Frame, ...] | None:
        if thread_id is None:
            return None
        return self.stacks.get(thread_id) or None
