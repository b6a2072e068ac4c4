"""How long a thread waited for a CPU (Linux schedstat run delay).

Tells a GIL-held freeze from an overloaded machine. When the watchdog could
not run for a while, either a C call held the GIL (the watchdog slept on the
GIL, the loop thread ran: neither waited for a CPU) or the machine was
overloaded (the watchdog or the GIL holder sat runnable on a run queue: their
run delay grew by a good part of the silence). Only the first is a freeze.

Each reader keeps its /proc file open and re-reads it with pread (about a
microsecond), so it can be sampled every watchdog round.
"""

from __future__ import annotations

import contextlib
import os


class RunDelay:
    """Cumulative seconds one thread spent runnable but not running; None if unknown."""

    __slots__ = ("_fd",)

    def __init__(self, path: str) -> None:
        try:
            self._fd: int | None = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        except OSError:  # no /proc, or schedstats not built into this kernel
            self._fd = None

    @classmethod
    def of_thread(cls, native_id: int | None) -> RunDelay:
        if native_id is None:
            return cls("")
        return cls(f"/proc/self/task/{native_id}/schedstat")

    def read(self) -> float | None:
        if self._fd is None:
            return None
        try:
            return int(os.pread(self._fd, 128, 0).split()[1]) / 1e9
        except (OSError, IndexError, ValueError):
            return None

    def __del__(self) -> None:
        self.close()

    def close(self) -> None:
        if self._fd is not None:
            with contextlib.suppress(OSError):
                os.close(self._fd)
            self._fd = None
