"""A thread's CPU clock, sampled twice: spinning or blocked."""

from __future__ import annotations

import dataclasses
import threading
import time

from .. import _state


@dataclasses.dataclass(frozen=True, slots=True)
class CpuSample:
    at: float  # monotonic
    cpu: float  # the thread's CPU seconds


def cpu_sample(ident: int | None) -> CpuSample | None:
    """The thread's CPU time now (None where pthread_getcpuclockid is missing)."""
    if ident is None or not hasattr(time, "pthread_getcpuclockid"):
        return None
    try:
        clock = time.pthread_getcpuclockid(ident)
        return CpuSample(time.monotonic(), time.clock_gettime(clock))
    except (OSError, OverflowError, ValueError):  # thread gone or not ours
        return None


def native_id_of(ident: int | None) -> int | None:
    """The kernel thread id of a ``threading`` ident (None if not known): what the
    thread said itself (``_state.native_ids``; right after a fork too), else
    ``threading``'s record."""
    if ident is None:
        return None
    told = _state.native_ids.get(ident)
    if told is not None:
        return told
    for t in threading.enumerate():  # a copy made under threading's own lock
        if t.ident == ident:
            return t.native_id
    return None
