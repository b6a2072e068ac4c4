"""Garbage collections on a thread, as the watchdog learns of them afterwards.

A collection holds the GIL: nobody can see one live. A ``gc.callbacks``
hook records the collection running now and the last one that finished, so
a freeze seen only after the GIL came back can say it was a collection.
The two records are process-global (``_state``).
"""

from __future__ import annotations

import gc
import threading
import time
from typing import Any

from .. import _state


def _gc_hook(phase: str, info: dict[str, Any]) -> None:
    # One store each, under the GIL (the collecting thread holds it): the
    # watchdog's single loads need no lock.
    if phase == "start":
        _state.gc_running = (threading.get_ident(), time.monotonic())
        return
    run, _state.gc_running = _state.gc_running, None
    if run is not None:
        _state.gc_last = (run[0], run[1], time.monotonic(), int(info.get("generation", -1)))


def gc_during(ident: int | None, seconds: float, until: float,
              slack: float = 0.0) -> tuple[float, int] | None:
    """(seconds, generation) of the last collection on thread ``ident`` if it lasted
    at least half of a freeze of ``seconds`` that ended by ``until`` (monotonic;
    ``slack``: how late the end may be known), else None."""
    last = _state.gc_last
    if last is None or ident is None or last[0] != ident:
        return None
    _, start, end, generation = last
    took = end - start
    if took < 0.5 * seconds or end < until - seconds - slack or start > until:
        return None
    return took, generation


def watch_gc() -> None:
    """Register the gc.callbacks hook (idempotent): a few stores per collection."""
    if _gc_hook not in gc.callbacks:
        gc.callbacks.append(_gc_hook)


def unwatch_gc() -> None:
    while _gc_hook in gc.callbacks:
        gc.callbacks.remove(_gc_hook)


def gc_running_on(ident: int | None) -> bool:
    run = _state.gc_running
    return run is not None and ident is not None and run[0] == ident
