"""The watched handles: add, attach, drop, remove; the services' end.

The bookkeeping behind install()/uninstall() that the handle itself and the
watchdog also need (``LoopWatch.uninstall()``, a pending handle finding its
loop, a loop that closed). It sits below all three, so none of them imports
another to reach it. Everything here runs under ``_state.lock``.
"""

from __future__ import annotations

from typing import Any

from . import _selector, _state
from ._sinks import metrics as _metrics
from ._snapshot import gcwatch


def attach(w: Any, loop: Any) -> None:
    """A pending handle found its loop (called on the watchdog thread)."""
    with _state.lock:
        if any(loop is x for x in _state.inherited_loops):
            return  # the parent's loop, seen on a forked child's stack: it never runs here
        if loop in _state.by_loop:  # watched already through another install()
            w.closed = True
            drop(w)
            return
        w.loop = loop
        w._thread_id = w.install_thread
        _state.by_loop[loop] = w


def drop(w: Any) -> None:
    """Forget one handle: the watchdog's list, the loop map, its gauges, its selector."""
    wd = _state.watchdog
    if wd is not None:
        wd.watches = tuple(x for x in wd.watches if x is not w)
        if w.state.freeze is not None:
            wd.closing.append(w)  # its end is recorded when the thread stops
    loop = w.loop
    if loop is not None and _state.by_loop.get(loop) is w:
        del _state.by_loop[loop]
    _metrics.forget(w)
    if w.idle is not None and w.loop is not None:
        _selector.detach(w.loop)  # give the loop its own selector back
        w.idle = None


def stop_services() -> None:
    """The last loop is no longer watched: stop the metrics server, stop feeding systemd."""
    srv, _state.metrics_server = _state.metrics_server, None
    if srv is not None:
        srv.stop()
    standby, _state.metrics_standby = _state.metrics_standby, None
    if standby is not None:
        standby.stop()
    notifier, _state.notifier = _state.notifier, None
    if notifier is not None:
        notifier.close()
    gcwatch.unwatch_gc()


def remove(w: Any) -> None:
    """Stop watching one loop; the watchdog thread stops when no loop is left."""
    with _state.lock:
        w.closed = True
        drop(w)
        wd = _state.watchdog
        if wd is not None and not wd.watches:
            _state.watchdog = None
            wd.stop()
            stop_services()
