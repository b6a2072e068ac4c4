"""install() / uninstall(): the handles, the watchdog thread's life, fork and exit."""

from __future__ import annotations

import asyncio
import atexit
import os
import threading
from collections.abc import Callable
from typing import Any

from . import _state
from ._config import load
from ._loopwatch import LoopWatch
from ._sinks.log import events
from ._watchdog import Watchdog


def install(
    loop: asyncio.AbstractEventLoop | None = None,
    *,
    on_freeze: Callable[[Any], Any] | None = None,
    **settings: Any,
) -> LoopWatch:
    """Watch an event loop for freezes; return its handle (see the README).

    Inside a running loop (or with ``loop=``) that loop is watched. Where no
    loop runs yet, the first loop that starts running in the calling thread
    is. Calling it again for a loop already watched returns the same handle.
    Settings are keywords with FREEZEWATCH_* environment twins; a bad value
    raises ValueError naming it.
    """
    config = load(settings)
    hooks = (on_freeze,) if on_freeze is not None else ()
    if loop is None:
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            loop = None
    with _state.lock:
        if loop is not None:
            existing = _state.by_loop.get(loop)
            if existing is not None and not existing.closed:
                return existing
        me = threading.get_ident()
        if loop is None:
            wd = _state.watchdog
            for w in wd.watches if wd else ():
                if w.loop is None and w._install_thread == me and not w.closed:
                    return w
        w = LoopWatch(loop, config, hooks, install_thread=me if loop is None or
                      _running_here(loop) else None)
        if loop is not None:
            _state.by_loop[loop] = w
        wd = _ensure_watchdog()
        wd.watches = (*wd.watches, w)
        return w


def _running_here(loop: asyncio.AbstractEventLoop) -> bool:
    try:
        return asyncio.get_running_loop() is loop
    except RuntimeError:
        return False


def attach(w: LoopWatch, loop: asyncio.AbstractEventLoop) -> None:
    """A pending handle found its loop (called on the watchdog thread)."""
    with _state.lock:
        if loop in _state.by_loop:  # watched already through another install()
            w.closed = True
            _drop(w)
            return
        w.loop = loop
        w._thread_id = w._install_thread
        _state.by_loop[loop] = w


def _ensure_watchdog() -> Watchdog:
    wd = _state.watchdog
    if wd is None or not wd.is_alive():
        wd = Watchdog()
        _state.watchdog = wd
        wd.start()
    return wd


def _drop(w: LoopWatch) -> None:
    wd = _state.watchdog
    if wd is not None:
        wd.watches = tuple(x for x in wd.watches if x is not w)
    if w.loop is not None and _state.by_loop.get(w.loop) is w:
        del _state.by_loop[w.loop]


def remove(w: LoopWatch, quiet: bool = False) -> None:
    """Stop watching one loop; the thread stops when no loop is left."""
    with _state.lock:
        w.closed = True
        _drop(w)
        wd = _state.watchdog
        if wd is not None and not wd.watches:
            _state.watchdog = None
            wd.stop()


def uninstall(loop: asyncio.AbstractEventLoop | None = None) -> None:
    """Stop watching ``loop``, or every loop when None; idempotent.

    The watchdog thread is gone when this returns (it is woken, not waited out).
    """
    with _state.lock:
        wd = _state.watchdog
        targets = [w for w in (wd.watches if wd else ()) if loop is None or w.loop is loop]
        for w in targets:
            w.closed = True
            _drop(w)
        if wd is not None and (loop is None or not wd.watches):
            _state.watchdog = None
            wd.stop()
    if loop is None:
        events.flush(1.0)


def _after_fork_in_child() -> None:
    # The watchdog thread did not survive the fork. Close every handle, so
    # none claims to watch; the child calls install() again for its loops.
    wd = _state.watchdog
    for w in wd.watches if wd else ():
        w.closed = True
    _state.reset()
    events.after_fork()


def _at_exit() -> None:
    wd = _state.watchdog
    if wd is not None:
        _state.watchdog = None
        wd.stop(timeout=1.0)
    events.flush(0.5)
    events.stop(0.5)


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)
atexit.register(_at_exit)
