"""Liveness: is every watched loop answering? Read by /healthz and the systemd pings.

``after_round`` runs on the watchdog thread once per round (after every loop
was ticked): it keeps the watchdog-fed gauges current and feeds systemd's
watchdog only while no loop is blocked past its ``liveness_limit``.
``healthz`` runs on a metrics-server request thread; it only reads plain
attributes of the handles (``blocked_for()``), so it answers while a loop is
frozen and never waits for the watchdog thread.

The handles are read through the few attributes named here (``name``,
``loop``, ``closed``, ``config``, ``blocked_for()``), never imported: this
module sits below them.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

from .. import _state
from .._events import FreezeEvent
from . import metrics as _metrics
from . import workers as _workers
from .log import events


def _frozen(w: Any) -> tuple[float, bool]:
    blocked = float(w.blocked_for())
    return blocked, blocked > w.config.liveness_limit


def after_round(watches: Sequence[Any], now: float) -> None:
    """Watchdog thread, once per round: sample gauges, feed systemd if healthy."""
    notifier = _state.notifier
    healthy = True
    for w in watches:
        if notifier is not None:  # only systemd's pings need the verdict
            healthy = healthy and not _frozen(w)[1]
        try:
            _metrics.sample(w, now)
        except Exception as e:  # boundary: the metrics sink; liveness goes on
            if _state.count_error("metrics") == 1:
                events.emit(FreezeEvent("metrics_error", w.name, 0.0,
                                        reason=f"{type(e).__name__}: {e}"), (), "error")
    if notifier is not None:
        notifier.maybe_ping(now, healthy)


def healthz() -> tuple[bool, dict[str, Any]]:
    """(healthy, JSON document) for /healthz: this process's loops and, in
    multiprocess mode, every other live worker's (each entry names its pid)."""
    wd = _state.watchdog
    watches = wd.watches if wd is not None else ()
    me = os.getpid()
    loops: list[dict[str, Any]] = []
    frozen: list[dict[str, Any]] = []
    limit, idle = 10.0, 2.0
    for w in watches:
        limit, idle = w.config.liveness_limit, w.config.idle_beat_every
        if w.loop is None or w.closed:  # still waiting for its loop to start
            continue
        blocked, over = _frozen(w)
        entry = {"loop": w.name, "pid": me, "blocked_seconds": round(blocked, 3),
                 "liveness_limit": w.config.liveness_limit}
        loops.append(entry)
        if over:
            frozen.append(entry)
    for entry in _workers.other_workers(limit, idle):
        loops.append(entry)
        if entry["blocked_seconds"] > entry["liveness_limit"]:
            frozen.append(entry)
    if watches and (wd is None or not wd.is_alive()):
        return False, {"status": "watchdog thread not running", "pid": me, "loops": loops}
    if frozen:
        names = ", ".join(f"{f['loop']} (pid {f['pid']}) for {f['blocked_seconds']:g} s"
                          for f in frozen)
        return False, {"status": "frozen", "pid": me, "detail": f"loop frozen: {names}",
                       "frozen": frozen, "loops": loops}
    doc: dict[str, Any] = {"status": "ok", "pid": me, "loops": loops}
    if not loops and not _metrics.multiprocess_dir():
        # A supervisor (freezewatch run -- uvicorn --workers N) holds the port but
        # runs no loop: say so rather than let "ok" speak for the workers.
        doc["note"] = ("this process runs no watched loop; for the workers of a "
                       "multi-process server set PROMETHEUS_MULTIPROC_DIR")
    return True, doc
