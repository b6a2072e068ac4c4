"""Global state department: the only process-global state of freezewatch.

Everything freezewatch keeps per process lives here, as plain module
attributes, and ``reset()`` puts every one of them back (tests; a forked
child). This module imports nothing of freezewatch, so every other module
may import it; what it holds is typed loosely (``Any``) for that reason.
Don't reload this module or everything breaks.

Two kinds of names, both here:

- state (cleared by ``reset()``): the watchdog, the handles, the server and
  notifier, dump sequence and rate limit, the optional sinks, the gc records,
  the counters of errors survived;
- process-lifetime facts (kept by ``reset()``, because what they record
  cannot be undone, or must survive a fork: an ``os.register_at_fork`` hook,
  the wrappers around ``faulthandler.register``, an application that took
  the faulthandler signal, autostart done, metric objects registered):
  ``autostarted``, ``faulthandler``, ``faulthandler_wrapped``, ``fork_hooks``,
  ``metric_families``, ``parts``, ``sentinel_pipe_fds``.
"""

from __future__ import annotations

import itertools
import threading
import weakref
from typing import Any

# Guards install/uninstall only: never taken by the watchdog thread while it
# inspects a loop, and never on the heartbeat path.
lock = threading.RLock()
watchdog: Any = None
"""The one ``_watchdog.Watchdog`` (None when nothing is watched)."""
by_loop: dict[Any, Any] = {}
"""Watched loops (keyed by loop object) -> handle. Read lock-free by watch()."""
dump_seq: Any = itertools.count(1)
"""Dump sequence numbers (an iterator; ``_sentinel.SharedSeq`` while a sentinel runs)."""
last_dump_by_signature: dict[str, float] = {}
"""Rate limit: signature -> when (monotonic) a dump with it was last written."""
metrics_server: Any = None
"""The /metrics + /healthz server thread (install(metrics_port=...)); one per process."""
metrics_standby: Any = None
"""Retries a metrics port another process held (``_sinks.serve.Standby``), or None."""
notifier: Any = None
"""systemd watchdog pings (NOTIFY_SOCKET + WATCHDOG_USEC), fed by the watchdog thread."""
inherited_loops: list[Any] = []
"""After fork, in the child: loops that were running on the forking thread's
stack. They are the parent's and never run again here; never attach to them."""
extra_sinks: list[Any] = []
"""Optional sinks (OpenTelemetry, Sentry): see ``_sinks.report``. Copy-on-write."""
gc_running: tuple[int, float] | None = None
"""(thread ident, monotonic start) of the collection running now (``_snapshot.gcwatch``)."""
gc_last: tuple[int, float, float, int] | None = None
"""(thread ident, start, end, generation) of the last collection that finished."""
metric_children: weakref.WeakKeyDictionary[Any, Any] = weakref.WeakKeyDictionary()
"""Each handle's Prometheus label children (``_sinks.metrics``)."""
metrics_lock = threading.Lock()
"""Guards the creation of metric families and children (never the loop thread)."""
native_ids: dict[int, int] = {}
"""Thread ident -> kernel thread id, as each loop thread told it in its first beat.
``threading.Thread.native_id`` is stale in a forked child (it keeps the
parent's id for the forking thread), so the loop thread's own word wins."""
errors_survived: dict[str, int] = {}
"""Failures caught at a boundary and survived, by where (``metrics``, ``sink``...)."""

# Process-lifetime facts: kept by reset().
autostarted = False
"""``FREEZEWATCH_AUTOSTART`` / ``freezewatch run`` installed already in this process."""
faulthandler: dict[str, Any] = {"app_took_over": False, "on_conflict": None,
                                "registered_pid": 0}
"""The faulthandler layer's process-wide facts (see ``_faulthandler``): once the
application took the signal, it keeps it, in forked children too."""
fork_hooks: set[str] = set()
"""Names of the os.register_at_fork hooks registered (they cannot be removed)."""
faulthandler_wrapped = False
metric_families: weakref.WeakKeyDictionary[Any, Any] = weakref.WeakKeyDictionary()
"""The metric objects of each registry: created once per process (re-creating them
in the same registry raises "Duplicated timeseries")."""
parts: dict[str, bool] = {"selector": True, "gc_hook": True}
"""A documented internal seam for benchmarks (scripts/bench.py): switch off one
part of the watchdog that has no setting of its own, before install(). ``selector``:
the selector wrapper that lets an idle loop park the watchdog (and the GIL
hand-off of a saturated loop); ``gc_hook``: the gc.callbacks hook that names a
garbage collection as a freeze's cause. Not for applications."""
sentinel_pipe_fds: set[int] = set()
"""Write ends of the pipes to our sentinels: closed in a forked child, so the
parent's sentinel still sees EOF when the parent dies."""


def count_error(where: str) -> int:
    """Count one failure survived at ``where``; returns how many so far."""
    n = errors_survived.get(where, 0) + 1
    errors_survived[where] = n
    return n


def reset() -> None:
    """Forget everything (tests; after fork in the child). Does not stop threads."""
    global watchdog, dump_seq, metrics_server, notifier, gc_running, gc_last, extra_sinks
    global metrics_standby
    watchdog = None
    metrics_server = None
    metrics_standby = None
    notifier = None
    gc_running = gc_last = None
    extra_sinks = []
    inherited_loops.clear()
    by_loop.clear()
    last_dump_by_signature.clear()
    errors_survived.clear()
    native_ids.clear()
    metric_children.clear()
    dump_seq = itertools.count(1)
