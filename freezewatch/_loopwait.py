"""An idle loop without a Python selector (uvloop), seen from the watchdog's side.

uvloop waits for I/O in libuv's ``epoll_pwait(2)``, in C: there is no
selector to wrap (``_selector``), so nothing on the loop thread says it is
idle or wakes a parked watchdog. The watchdog asks the kernel instead, which
costs the loop thread nothing: ``WaitReader`` re-reads (pread on descriptors
kept open) ``/proc/self/task/<tid>/syscall``, which says whether the loop
thread is blocked in epoll_wait/epoll_pwait, on which epoll descriptor and
with which timeout (its next timer), and the third field of its
``schedstat``, how often it was scheduled in: unchanged between two looks,
it did not run in between (``_detect.kernel_idle`` decides). Only that
syscall counts: a loop thread frozen in a blocking call (``time.sleep`` is
clock_nanosleep, a blocking ``recv`` recvfrom, read or poll) is never taken
for idle, nor an epoll wait of the application's own (another descriptor).

A parked watchdog cannot be woken by such a loop: it looks again every
``interval`` (one pread, no round, ``Watchdog._sleep_on_kernel``) and runs
a round as soon as the loop thread ran. (An epoll of its own watching the
loop's epoll descriptor would be woken, but the readiness is re-checked
when it is delivered, and by then the loop has taken its events: measured,
it never fires.)

``Wakeup`` is the watchdog's wake-up flag. Reading another thread of our
own process needs no ptrace permission. Nothing here raises: what cannot be
read is None (then: no parking).
"""

from __future__ import annotations

import contextlib
import os
import platform
import threading

from ._decisions import KernelWait

EPOLL_WAITS: tuple[int, ...] = {
    "x86_64": (232, 281),  # epoll_wait, epoll_pwait (libuv's)
    "aarch64": (22,), "arm64": (22,),  # epoll_pwait (the generic table has no epoll_wait)
}.get(platform.machine(), ())
"""epoll waits whose 4th argument is the timeout in ms (epoll_pwait2's is a pointer: not here)."""


class WaitReader:
    """One loop thread's epoll wait as /proc shows it, or None."""

    __slots__ = ("_sc", "_ss")

    def __init__(self, native_id: int) -> None:
        self._sc = self._ss = -1
        if not EPOLL_WAITS:
            return
        try:
            self._sc = os.open(f"/proc/self/task/{native_id}/syscall", os.O_RDONLY | os.O_CLOEXEC)
            self._ss = os.open(f"/proc/self/task/{native_id}/schedstat",
                               os.O_RDONLY | os.O_CLOEXEC)
        except OSError:  # no /proc, no schedstats, or the thread is gone
            self.close()

    def read(self) -> KernelWait | None:
        if self._sc < 0:
            return None
        try:
            runs = os.pread(self._ss, 128, 0).split()[2]
            parts = os.pread(self._sc, 256, 0).split()
            if os.pread(self._ss, 128, 0).split()[2] != runs:
                return None  # it ran while we read: not one wait
            if not parts[0].isdigit() or int(parts[0]) not in EPOLL_WAITS:
                return None  # "running", another syscall, or none
            ms = int(parts[4], 16) & 0xFFFFFFFF  # an int in a 64-bit register
            epfd = int(parts[1], 16)
        except (OSError, IndexError, ValueError):
            return None
        if ms >= 1 << 31:
            ms -= 1 << 32
        return KernelWait(epfd, None if ms < 0 else ms / 1000, int(runs))

    def runs(self) -> int | None:
        """Times the thread was scheduled in so far (one pread): did it run since?"""
        try:
            return int(os.pread(self._ss, 128, 0).split()[2]) if self._ss >= 0 else None
        except (OSError, IndexError, ValueError):
            return None

    def close(self) -> None:
        for fd in (self._sc, self._ss):
            if fd >= 0:
                with contextlib.suppress(OSError):
                    os.close(fd)
        self._sc = self._ss = -1

    def __del__(self) -> None:
        self.close()


class Wakeup:
    """A wake-up flag for the watchdog: ``set()`` from any thread, ``wait()`` on the watchdog.

    A bare lock used as a binary semaphore: released means set. It does what
    the watchdog needs of a threading.Event for a fraction of the cost:
    Event.wait builds a Condition waiter (a new lock, a deque append, three
    lock operations in Python) on every round, this is one C call. ``wait``
    consumes the flag (the watchdog clears it at every round anyway)."""

    __slots__ = ("_lock",)

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._lock.acquire()  # held: not set

    def set(self) -> None:
        # Lock.release may be called by any thread; two set() racing: the
        # second finds it released already, which is the state it wants.
        with contextlib.suppress(RuntimeError):
            self._lock.release()

    def clear(self) -> None:
        self._lock.acquire(False)

    def wait(self, timeout: float) -> bool:
        """Sleep until set() or ``timeout`` seconds; True if set (the flag is consumed)."""
        return self._lock.acquire(True, max(0.0, timeout))
