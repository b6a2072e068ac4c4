"""The sentinel's sleep (stdlib only, beside ``_sentinel_main``; no freezewatch import).

It sleeps until its next check is due (``_sentinel_main._next_wait``), or:

- a byte, or EOF, on the pipe from the parent (``_sentinel.Sentinel.resume``:
  a parked watchdog was woken by a loop leaving its selector; EOF: the
  parent is gone);
- a loop without a Python selector (uvloop) waking up while the watchdog is
  parked on it. The watchdog parks on such a loop from the kernel's view
  (``_loopwait``) and sends the sentinel a copy of the loop's epoll
  descriptor (``Sentinel.watch_fd``, SCM_RIGHTS over a datagram socket).
  While a park is announced, ``arm`` has the next event on it end the sleep
  once (one-shot): ``loop_woke`` says when, and the announced silence ends
  there, as ``resume`` ends it for asyncio loops. Without it a C call that
  holds the GIL right after such a loop wakes would go unseen until the
  announced park was over.
"""

from __future__ import annotations

import contextlib
import math
import os
import select
import socket
import time

MAX_FDS = 8
"""Loop descriptors kept (a process that makes many loops: the oldest are dropped)."""


class Sleep:
    def __init__(self, rfd: int, sock: int) -> None:
        self._rfd = rfd
        self._ep = select.epoll()
        self._ep.register(rfd, select.EPOLLIN)
        self._sock = socket.socket(fileno=sock) if sock >= 0 else None
        if self._sock is not None:
            self._sock.setblocking(False)
            self._ep.register(sock, select.EPOLLIN)
        self._loops: list[int] = []
        self.loop_woke = math.inf
        """When a loop's descriptor last woke us since ``arm`` (monotonic; inf: not)."""

    def arm(self) -> None:
        """A park is announced: the next event on a loop's descriptor wakes us, once."""
        self.loop_woke = math.inf
        for fd in self._loops:
            with contextlib.suppress(OSError):
                self._ep.modify(fd, select.EPOLLIN | select.EPOLLONESHOT)

    def disarm(self) -> None:
        """The watchdog is not parked on them: their events are none of our business."""
        self.loop_woke = math.inf
        for fd in self._loops:
            with contextlib.suppress(OSError):
                self._ep.modify(fd, select.EPOLLONESHOT)  # no events until armed again

    def wait(self, timeout: float) -> bool:
        """Sleep up to ``timeout`` s; False when the parent is gone (EOF on the pipe)."""
        try:
            events = self._ep.poll(max(0.0, timeout))
        except InterruptedError:
            return True
        for fd, _ in events:
            if fd == self._rfd:
                if not os.read(self._rfd, 64):
                    return False  # EOF: the parent is gone (or closed us); a byte: resume()
            elif self._sock is not None and fd == self._sock.fileno():
                self._receive()
            elif self.loop_woke == math.inf:
                self.loop_woke = time.monotonic()
        return True

    def _receive(self) -> None:
        try:
            _, fds, _, _ = socket.recv_fds(self._sock, 16, 4)  # type: ignore[arg-type]
        except OSError:
            return
        for fd in fds:
            try:
                self._ep.register(fd, select.EPOLLONESHOT)  # disarmed until arm()
            except OSError:
                os.close(fd)
                continue
            self._loops.append(fd)
            while len(self._loops) > MAX_FDS:
                old = self._loops.pop(0)
                with contextlib.suppress(OSError):
                    self._ep.unregister(old)
                os.close(old)
