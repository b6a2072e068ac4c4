"""An idle loop without a Python selector (uvloop), seen from the watchdog's side.

uvloop waits for I/O in libuv's ``epoll_pwait(2)``, in C: there is no
selector to wrap (``_selector``), so nothing on the loop thread says it is
idle or wakes a parked watchdog. The watchdog asks the kernel instead, which
costs the loop thread nothing:

- ``WaitReader``: ``/proc/self/task/<tid>/syscall`` (kept open, re-read with
  pread) says whether the loop thread is blocked in epoll_wait/epoll_pwait,
  on which epoll descriptor, with which timeout (its next timer); the third
  field of its ``schedstat`` counts how often it was scheduled in, so an
  unchanged count between two looks means it did not run in between
  (``_detect.kernel_idle`` decides). Only that syscall counts: a loop thread
  frozen in a blocking call (``time.sleep`` is clock_nanosleep, a blocking
  ``recv`` recvfrom, read or poll) is never taken for idle, and an epoll
  wait of the application's own has the application's frame on top (the
  watchdog looks only while the loop's idle frame is).
- ``LoopPoll``: the parked watchdog sleeps in an epoll of its own that
  watches the loop's epoll descriptor (an epoll descriptor is readable while
  it has events for its owner), one-shot: I/O for the loop wakes the
  watchdog at once, as the selector wrapper does on asyncio; the loop's own
  timers are covered by the park's length (``_detect.park_for``).

``Wakeup`` is the watchdog's wake-up flag, and its sleep: on a lock, or in
``LoopPoll`` while it is parked on such a loop. Reading another thread of our
own process needs no ptrace permission.
Nothing here raises: what cannot be read is None (then: no parking).
"""

from __future__ import annotations

import contextlib
import os
import platform
import select
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

    def close(self) -> None:
        for fd in (self._sc, self._ss):
            if fd >= 0:
                with contextlib.suppress(OSError):
                    os.close(fd)
        self._sc = self._ss = -1

    def __del__(self) -> None:
        self.close()


class LoopPoll:
    """The watchdog's parked sleep over loops' epoll descriptors (watchdog thread only)."""

    def __init__(self) -> None:
        self._ep: select.epoll | None = None
        self._own = -1
        self.loop_fds: set[int] = set()

    @staticmethod
    def available() -> bool:
        return bool(EPOLL_WAITS) and hasattr(select, "epoll") and hasattr(os, "eventfd")

    def own(self, fd: int) -> None:
        """The watchdog's own wake-up descriptor (an eventfd), always watched."""
        self._own = fd
        self._epoll().register(fd, select.EPOLLIN)

    def _epoll(self) -> select.epoll:
        if self._ep is None:
            self._ep = select.epoll()
        return self._ep

    def arm(self, epfd: int) -> bool:
        """Wake the next ``poll`` once when the loop's ``epfd`` has events (or has now)."""
        ep = self._epoll()
        mask = select.EPOLLIN | select.EPOLLONESHOT
        try:
            if epfd in self.loop_fds:
                ep.modify(epfd, mask)
            else:
                ep.register(epfd, mask)
                self.loop_fds.add(epfd)
        except OSError:  # closed meanwhile (the loop went away), or not pollable
            self.loop_fds.discard(epfd)
            return False
        return True

    def poll(self, timeout: float) -> bool:
        """Sleep up to ``timeout`` s; True if a loop's descriptor woke us."""
        try:
            events = self._epoll().poll(max(0.0, timeout))
        except OSError:
            return False
        return any(fd != self._own for fd, _ in events)

    def close(self) -> None:
        if self._ep is not None:
            self._ep.close()
            self._ep = None
        self.loop_fds.clear()


class Wakeup:
    """A wake-up flag for the watchdog: ``set()`` from any thread, ``wait()`` on the watchdog.

    A bare lock used as a binary semaphore: released means set. It does what
    the watchdog needs of a threading.Event for a fraction of the cost:
    Event.wait builds a Condition waiter (a new lock, a deque append, three
    lock operations in Python) on every round, this is one C call. ``wait``
    consumes the flag (the watchdog clears it at every round anyway). Parked
    on a uvloop loop, the watchdog sleeps in ``poll`` instead; ``set()`` then
    also writes an eventfd that ``poll`` watches."""

    __slots__ = ("_efd", "_lock", "_polling", "poll")

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._lock.acquire()  # held: not set
        self._efd = -1
        self._polling = False
        self.poll = LoopPoll()

    def set(self) -> None:
        # Lock.release may be called by any thread; two set() racing: the
        # second finds it released already, which is the state it wants.
        with contextlib.suppress(RuntimeError):
            self._lock.release()
        if self._polling:  # read after the release: see wait()
            with contextlib.suppress(OSError):
                os.eventfd_write(self._efd, 1)

    def clear(self) -> None:
        self._lock.acquire(False)

    def wait(self, timeout: float, loops: bool = False) -> bool | None:
        """Sleep until set() or ``timeout`` seconds; True if set (the flag is consumed).
        ``loops``: also until a loop armed in ``poll`` has events (then None)."""
        if loops and self._efd < 0:
            try:
                self._efd = os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC)
                self.poll.own(self._efd)
            except OSError:
                loops = False
        if not loops:
            return self._lock.acquire(True, max(0.0, timeout))
        # _polling before the lock is tried, set() reads it after its release:
        # one of the two sees the other, so a set() is never slept through.
        self._polling = True
        try:
            if self._lock.acquire(False):
                return True
            woke = self.poll.poll(timeout)
        finally:
            self._polling = False
        with contextlib.suppress(OSError):  # empty unless set() wrote
            os.eventfd_read(self._efd)
        if self._lock.acquire(False):
            return True
        return None if woke else False

    def close(self) -> None:
        self.poll.close()
        if self._efd >= 0:
            with contextlib.suppress(OSError):
                os.close(self._efd)
            self._efd = -1
