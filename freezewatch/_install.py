"""install() / uninstall(): the handles, the watchdog thread's life, fork and exit."""

from __future__ import annotations

import asyncio
import atexit
import errno
import os
import sys
import threading
from collections.abc import Callable
from typing import Any

from . import _registry, _state, otel, sentry
from ._config import Config, load
from ._events import FreezeEvent
from ._handle import LoopWatch
from ._sinks import metrics as _metrics
from ._sinks.log import events
from ._sinks.sdnotify import Notifier
from ._sinks.serve import MetricsServer, Standby
from ._snapshot import gcwatch
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
    w = _install(loop, config, hooks)
    if w.config is not config:  # an existing handle: its settings stay in force
        _warn_ignored(w, config, settings)
    _autodetect_sinks()
    return w


def _warn_ignored(w: LoopWatch, config: Config, settings: dict[str, Any]) -> None:
    """A second install() for a watched loop returns the first handle: one
    ``install_ignored`` warning names each explicit setting that differs."""
    ignored = []
    for name in sorted(settings):
        if settings[name] is None:
            continue
        now, asked = getattr(w.config, name), getattr(config, name)
        if now is not asked and now != asked:
            ignored.append(f"{name}={asked!r} ignored ({name}={now!r} in force)")
    if ignored:
        events.emit(FreezeEvent(
            "install_ignored", w.name, 0.0,
            reason="this loop is watched already, with the first install()'s settings: "
                   + "; ".join(ignored)), (), "warning")


def _install(loop: asyncio.AbstractEventLoop | None, config: Config,
             hooks: tuple[Any, ...]) -> LoopWatch:
    with _state.lock:
        if loop is not None:
            existing: LoopWatch | None = _state.by_loop.get(loop)
            if existing is not None and not existing.closed:
                return existing
        me = threading.get_ident()
        # The kernel's id of this thread, said by itself (threading's record of
        # a forking thread can be the parent's): the sentinel signals it.
        _state.native_ids[me] = threading.get_native_id()
        if loop is None:
            pending: Watchdog | None = _state.watchdog
            for w in pending.watches if pending else ():
                if w.loop is None and w.install_thread == me and not w.closed:
                    return w
        _metrics.family(config.registry)  # the metric families exist from install on
        _ensure_server(config)  # before the handle: a port that cannot be bound leaves none
        w = LoopWatch(loop, config, hooks, install_thread=me if loop is None or
                      _running_here(loop) else None)
        if _state.parts["gc_hook"]:  # a flag while a collection runs: cause "garbage collection"
            gcwatch.watch_gc()
        if loop is not None:
            _state.by_loop[loop] = w
        _ensure_watchdog(w, prime=True)
        if config.systemd_watchdog and _state.notifier is None:
            _state.notifier = Notifier.from_env()
        return w


def _autodetect_sinks() -> None:
    """The optional sinks turn on by themselves where the application set up
    OpenTelemetry (a real MeterProvider or LoggerProvider) or initialised
    Sentry. Neither SDK is imported here: each check is a ``sys.modules`` lookup."""
    for name, detect in (("otel", otel.autodetect), ("sentry", sentry.autodetect)):
        try:
            detect()
        except Exception as e:  # boundary: an SDK's state; install never fails over it
            events.emit(FreezeEvent("sink_failed", "*", 0.0,
                                    reason=f"{name} autodetect: {type(e).__name__}: {e}"),
                        (), "error")


def _ensure_server(config: Config) -> None:
    """Start the /metrics + /healthz thread if asked for and not running yet."""
    if not config.metrics_port:
        return
    srv = _state.metrics_server
    if srv is not None and srv.is_alive():
        if (srv.addr, srv.port) != (config.metrics_addr, config.metrics_port):
            raise ValueError(
                f"metrics_port {config.metrics_port} on {config.metrics_addr}: this process "
                f"already serves metrics on {srv.addr}:{srv.port} (one server per process)")
        return
    standby = _state.metrics_standby
    if standby is not None and standby.is_alive() and (standby.addr, standby.port) == (
            config.metrics_addr, config.metrics_port):
        return  # found taken already; its standby keeps trying
    try:
        _state.metrics_server = MetricsServer(config.metrics_addr, config.metrics_port,
                                              config.registry)
    except OSError as e:
        if e.errno != errno.EADDRINUSE:
            raise ValueError(
                f"metrics_port {config.metrics_port} on metrics_addr {config.metrics_addr!r} "
                f"cannot be bound: {e.strerror or e}") from None
        _server_skipped(config)
        return
    if standby is not None:  # waiting for another port: this one serves now
        standby.stop()
        _state.metrics_standby = None


def _server_skipped(config: Config) -> None:
    """The port is taken (another worker of the same server, as a rule): this
    process is watched all the same and serves no metrics; said once, counted."""
    _state.count_error("metrics_server_skipped")
    _metrics.server_skipped(config.registry)
    where = f"{config.metrics_addr}:{config.metrics_port}"
    if _metrics.multiprocess_dir():
        # Multiprocess mode: any process's server shows every worker's values
        # (and /healthz every worker's loops), so the one holding the port serves all.
        why = (f"{where} is taken; in multiprocess mode the process holding it serves "
               f"every worker's metrics and health")
    else:
        why = (f"{where} is taken (another worker?): this process is watched but its "
               f"metrics are not served; set PROMETHEUS_MULTIPROC_DIR for multi-worker "
               f"servers (docs/metrics.md)")
    events.emit(FreezeEvent("metrics_server_skipped", config.name or "*", 0.0, reason=why),
                (), "warning" if not _metrics.multiprocess_dir() else "info")
    old = _state.metrics_standby
    if old is not None:  # it waited for another port
        old.stop()
    _state.metrics_standby = Standby(config.metrics_addr, config.metrics_port,
                                     config.registry, _took_over)


def _took_over(srv: MetricsServer) -> bool:
    """The standby bound the port (its holder is gone): this process serves now."""
    with _state.lock:
        current = _state.metrics_server
        if (_state.watchdog is None or _state.metrics_standby is None
                or (current is not None and current.is_alive())):
            return False  # uninstalled meanwhile, or serving already
        _state.metrics_standby = None
        _state.metrics_server = srv
    events.emit(FreezeEvent("metrics_server_started", "*", 0.0,
                            reason=f"{srv.addr}:{srv.port} was free again: serving here"),
                (), "info")
    return True


def _running_here(loop: asyncio.AbstractEventLoop) -> bool:
    try:
        return asyncio.get_running_loop() is loop
    except RuntimeError:
        return False


def _ensure_watchdog(w: LoopWatch, prime: bool = False) -> Watchdog:
    """The watchdog, with ``w`` among its watches; started if none runs."""
    wd: Watchdog | None = _state.watchdog
    if wd is not None and wd.is_alive():
        wd.watches = (*wd.watches, w)
        return wd
    wd = Watchdog()
    wd.watches = (w,)
    _state.watchdog = wd
    wd.start(prime)
    return wd


def uninstall(loop: asyncio.AbstractEventLoop | None = None) -> None:
    """Stop watching ``loop``, or every loop when None; idempotent.

    The watchdog thread is gone when this returns (it is woken, not waited out).
    """
    with _state.lock:
        wd = _state.watchdog
        targets = [w for w in (wd.watches if wd else ()) if loop is None or w.loop is loop]
        for w in targets:
            w.closed = True
            _registry.drop(w)
        if wd is not None and (loop is None or not wd.watches):
            _state.watchdog = None
            wd.stop()
            _registry.stop_services()
        elif wd is None:
            _registry.stop_services()
    if loop is None:
        events.flush(1.0)


def _after_fork_in_child() -> None:
    # Only the forking thread survives a fork: the watchdog, metrics-server and
    # events threads are gone, and a lock one of them held stays held forever.
    # Every inherited handle is closed, so none claims to watch. The loop the
    # child will run is on the forking thread (gunicorn --preload forks workers
    # from the thread that ran install() at import; multiprocessing forks from
    # the caller), so if a handle watched (or waited for) a loop on this very
    # thread, a pending handle with the same settings takes its place: it
    # watches the first loop the child starts here. Loops of other threads
    # cannot run in the child: nothing replaces their handles.
    _state.lock = threading.RLock()
    me = threading.get_ident()
    wd = _state.watchdog
    rearm: LoopWatch | None = None
    for w in wd.watches if wd else ():
        w.closed = True
        if (w.install_thread if w.loop is None else w.thread_ident) == me:
            rearm = w
    if _state.metrics_server is not None:  # the parent keeps serving on the port
        _state.metrics_server.close_in_child()
    if _state.notifier is not None:  # systemd watches the main process, not its children
        _state.notifier.close()
    _state.reset()
    _state.native_ids[me] = threading.get_native_id()  # not the parent's id of this thread
    events.after_fork()
    _metrics.after_fork()
    if rearm is not None:
        _state.inherited_loops.extend(_loops_on_this_stack())
        w = LoopWatch(None, rearm.config, rearm.hooks, install_thread=me)
        _ensure_watchdog(w)  # not primed: no process is spawned inside a fork hook


def _loops_on_this_stack() -> list[Any]:
    """Event loops referenced by the current thread's frames (as ``_observe.find_loop``
    sees them)."""
    found: list[Any] = []
    frame = sys._getframe(1)
    depth = 0
    while frame is not None and depth < 200:
        depth += 1
        try:
            local = frame.f_locals
            cands = [local.get("self"), local.get("loop"),
                     getattr(local.get("self"), "_loop", None)]
        except Exception:  # a frame whose locals cannot be read: nothing to learn there
            cands = []
        found.extend(c for c in cands
                     if isinstance(c, asyncio.AbstractEventLoop) and all(c is not f for f in found))
        frame = frame.f_back  # type: ignore[assignment]
    return found


def _at_exit() -> None:
    wd = _state.watchdog
    if wd is not None:
        _state.watchdog = None
        wd.stop(timeout=1.0)
    _registry.stop_services()
    _mark_dead_in_multiprocess_dir()
    events.flush(0.5)
    events.stop(0.5)


def _mark_dead_in_multiprocess_dir() -> None:
    """A clean exit in multiprocess mode: drop this pid's live-gauge files
    (prometheus-client's mark_process_dead; a killed worker needs the server's
    child_exit hook instead, see docs/metrics.md)."""
    if not _metrics.multiprocess_dir() or not _metrics.in_use():
        return
    try:
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(os.getpid())  # type: ignore[no-untyped-call]
    except OSError:  # boundary: exit must not fail over a metrics file
        pass


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)
atexit.register(_at_exit)
