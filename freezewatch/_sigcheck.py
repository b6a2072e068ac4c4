"""Is a signal still ours? The kernel's view of a signal's disposition.

freezewatch sends a real-time signal to the loop threads so that their
faulthandler handler writes their stacks (``_faulthandler``). That is only
safe while the signal's disposition is still that handler: an application
that resets it to ``SIG_DFL`` after install() would be killed by the next
send ("Real-time signal 27", exit 189), and one that installed its own
handler there would be called instead. ``signal.getsignal`` cannot tell:
it knows only what ``signal.signal`` set, not what faulthandler (C code)
installed. The kernel knows, so ask it:

- in the process itself, ``sigaction(signum, NULL, &old)`` gives the handler's
  address: :class:`Claim` records it right after ``faulthandler.register``
  and :meth:`Claim.still_ours` compares (Linux, macOS; ctypes and libc);
- from another process (the sentinel, which must decide while the GIL is
  held and the parent cannot run Python), ``/proc/<pid>/status`` says whether
  the signal is caught at all (``SigCgt``): :func:`caught`. Not caught means
  ``SIG_DFL`` or ``SIG_IGN``: a send would kill the process or do nothing.

No state at module level: the caller keeps its :class:`Claim`.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import dataclasses
import sys

_SIGACTION_SIZE = 512  # larger than any libc's struct sigaction; the handler comes first


def _libc() -> ctypes.CDLL | None:
    # The process's own symbols first: find_library runs ldconfig in a subprocess.
    for name in (None, "libc.so.6", ctypes.util.find_library("c")):
        try:
            lib = ctypes.CDLL(name, use_errno=True)
        except OSError:
            continue
        if hasattr(lib, "sigaction"):
            return lib
    return None


def handler_of(signum: int, libc: ctypes.CDLL | None = None,
               old: ctypes.Array[ctypes.c_char] | None = None) -> int | None:
    """The address of ``signum``'s current handler as the kernel has it (0: SIG_DFL,
    1: SIG_IGN), or None where it cannot be read (no libc, a bad signal number).
    ``libc``: a handle from an earlier call (a Claim keeps one); ``old``: a buffer
    of ``_SIGACTION_SIZE`` bytes to reuse (a Claim keeps one: it is checked often)."""
    libc = libc or _libc()
    if libc is None or not hasattr(libc, "sigaction"):
        return None
    if old is None:
        old = ctypes.create_string_buffer(_SIGACTION_SIZE)
    # Every libc's struct sigaction starts with the handler union (sa_handler /
    # sa_sigaction): the first pointer-sized field is all that is read.
    if libc.sigaction(ctypes.c_int(signum), None, old) != 0:
        return None
    return ctypes.c_void_p.from_buffer(old).value or 0


@dataclasses.dataclass(frozen=True)
class Claim:
    """A signal's handler as it was when freezewatch installed it."""

    signum: int
    handler: int
    libc: ctypes.CDLL | None = dataclasses.field(default=None, compare=False, repr=False)
    buf: ctypes.Array[ctypes.c_char] = dataclasses.field(
        default_factory=lambda: ctypes.create_string_buffer(_SIGACTION_SIZE), compare=False,
        repr=False)

    @classmethod
    def take(cls, signum: int) -> Claim | None:
        """Record ``signum``'s handler now: call right after ``faulthandler.register``.
        None where the kernel's view cannot be read (then: never send the signal)."""
        libc = _libc()
        h = handler_of(signum, libc)
        if h is None or h in (0, 1):
            return None
        return cls(signum, h, libc)

    def still_ours(self) -> bool:
        """True while the kernel's handler is still the one recorded (not SIG_DFL,
        SIG_IGN, or someone else's handler, from ``signal.signal`` or C code)."""
        return ours(self.signum, self.handler, self.libc, self.buf)


def ours(signum: int, handler: int, libc: ctypes.CDLL | None = None,
         buf: ctypes.Array[ctypes.c_char] | None = None) -> bool:
    """``signum``'s current handler is ``handler`` (an address from :func:`handler_of`)."""
    current = handler_of(signum, libc, buf)
    return current is not None and current not in (0, 1) and current == handler


def caught(pid: int, signum: int, proc: str = "/proc") -> bool | None:
    """Whether process ``pid`` catches ``signum`` (a handler installed: neither
    SIG_DFL nor SIG_IGN), from ``/proc/<pid>/status``; None where unknown.

    For another process (the sentinel): False means a send would kill ``pid``
    (the default action of real-time signals) or be ignored. True says only
    that *some* handler is installed; whose, only the process itself can tell
    (:meth:`Claim.still_ours`).
    """
    if not sys.platform.startswith("linux") or not 1 <= signum <= 64:
        return None
    try:
        with open(f"{proc}/{pid}/status", "rb") as f:
            for line in f:
                if line.startswith(b"SigCgt:"):
                    return bool(int(line.split()[1], 16) >> (signum - 1) & 1)
    except (OSError, ValueError, IndexError):
        return None
    return None
