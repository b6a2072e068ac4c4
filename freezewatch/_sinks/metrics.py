"""Prometheus metrics sink: one set of metric objects per registry, a ``loop`` label.

prometheus_client is imported lazily (first install), so that
``PROMETHEUS_MULTIPROC_DIR`` set after ``import freezewatch`` but before
``install()`` still selects prometheus-client's multiprocess value files.

Threading: every function here runs on the watchdog thread, except
``forget()`` (install/uninstall) and the scrape-time function of the blocked
gauge (a server thread). prometheus_client metric objects take their own
short internal locks and "may be called from multiple threads"; the loop
thread never touches them, so a frozen loop cannot hold a lock a scrape needs.

The currently-blocked gauge is kept two ways (see docs/metrics.md):
single-process, its value is computed at scrape time from
``LoopWatch.blocked_for()`` (``Gauge.set_function``), so it is exact even when
the watchdog thread is busy writing a dump; in multiprocess mode a function
gauge is invisible to the aggregating collector (it reads only the value
files), so the watchdog thread also ``set()``s it every round, which is the
value multiprocess scrapes see (at most one ``interval`` old).

Which worker: ``worker_loop_blocked_seconds`` is the same value with a
``pid`` label, one series per live process (multiprocess mode: "liveall",
prometheus-client adds the pid); no other metric has a pid, so restarts add
no series. ``metrics_server_skipped_total`` counts processes that found the
port taken (``_install``).
"""

from __future__ import annotations

import contextlib
import os
import threading
import time
import weakref
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from .. import _state

if TYPE_CHECKING:
    from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

PREFIX = "freezewatch_"
LAG_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
               10.0, 30.0, 60.0)
DURATION_BUCKETS = (0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0,
                    1800.0, 3600.0)
TASKS_SAMPLE_EVERY = 5.0
"""Seconds between live-task counts: counting walks every task of the loop
(``asyncio.all_tasks``), so it is sampled at a low rate, never per heartbeat."""


def multiprocess_dir() -> str | None:
    """prometheus-client's multiprocess directory, when multiprocess mode is on."""
    # The lower-case name is prometheus-client's deprecated spelling, still honoured.
    env = os.environ
    return env.get("PROMETHEUS_MULTIPROC_DIR") or env.get("prometheus_multiproc_dir") or None


@dataclass(frozen=True)
class _Family:
    """The metric objects of one registry (created once: re-creating them in the
    same registry raises "Duplicated timeseries")."""

    lag: Histogram
    freezes: Counter
    freeze_duration: Histogram
    blocked: Gauge
    last_heartbeat: Gauge
    tasks: Gauge
    dumps: Counter
    dump_failures: Counter
    stalls: Counter
    worker_blocked: Gauge
    server_skipped: Counter
    pid_label: bool
    """``worker_blocked`` has our own ``pid`` label (created single-process);
    in multiprocess mode prometheus-client adds it."""


@dataclass
class _Bound:
    """One handle's label children (cached: ``labels()`` takes a lock and hashes)."""

    name: str
    family: _Family
    lag: Any
    freezes: Any
    freeze_duration: Any
    blocked: Any
    last_heartbeat: Any
    tasks: Any
    dumps: Any
    dump_failures: Any
    stalls: Any
    worker_blocked: Any
    tasks_sampled_at: float = float("-inf")
    multiprocess: bool = False
    """Multiprocess mode when bound: the watchdog must store the blocked gauge."""


# The metric objects of each registry and each handle's label children live in
# _state (metric_families: for the process's life, since re-creating them in
# a registry raises; metric_children: per handle). _state.metrics_lock guards
# their creation (install and watchdog threads); never taken on the loop thread.
_families: weakref.WeakKeyDictionary[Any, _Family] = _state.metric_families


def _default_registry() -> CollectorRegistry:
    from prometheus_client import REGISTRY

    return REGISTRY


def family(registry: CollectorRegistry | None = None) -> _Family:
    """The freezewatch metrics in ``registry`` (default: prometheus-client's), created once."""
    from prometheus_client import Counter, Gauge, Histogram

    reg = registry if registry is not None else _default_registry()
    with _state.metrics_lock:
        fam = _families.get(reg)
        if fam is not None:
            return fam
        labels = ("loop",)
        fam = _Family(
            lag=Histogram(PREFIX + "loop_lag_seconds",
                          "Delay between sending a heartbeat to the loop and the loop running "
                          "it (a freeze counts with its full duration).",
                          labels, registry=reg, buckets=LAG_BUCKETS),
            freezes=Counter(PREFIX + "freezes_total",
                            "Freezes: heartbeats not answered within the threshold.",
                            labels, registry=reg),
            freeze_duration=Histogram(PREFIX + "freeze_duration_seconds",
                                      "Full duration of each freeze, recorded when it ends.",
                                      labels, registry=reg, buckets=DURATION_BUCKETS),
            # Multiprocess: the worst worker for a loop name; dead workers'
            # values drop out once mark_process_dead(pid) ran ("live" modes).
            blocked=Gauge(PREFIX + "loop_blocked_seconds",
                          "Seconds the loop has been frozen right now (0 when it answers).",
                          labels, registry=reg, multiprocess_mode="livemax"),
            last_heartbeat=Gauge(PREFIX + "loop_last_heartbeat_timestamp_seconds",
                                 "Unix time the loop last answered a heartbeat.",
                                 labels, registry=reg, multiprocess_mode="livemin"),
            tasks=Gauge(PREFIX + "loop_tasks",
                        f"Unfinished asyncio tasks of the loop (sampled every "
                        f"{TASKS_SAMPLE_EVERY:g} s).",
                        labels, registry=reg, multiprocess_mode="livesum"),
            dumps=Counter(PREFIX + "dumps_written_total", "Dump files written.",
                          labels, registry=reg),
            dump_failures=Counter(PREFIX + "dump_failures_total",
                                  "Dumps that could not be written (disk full, directory "
                                  "gone, ...).", labels, registry=reg),
            stalls=Counter(PREFIX + "stalls_total",
                           "watch() units of work still open after their stall_after.",
                           labels, registry=reg),
            # Which worker: one series per live process (and loop). Multiprocess
            # mode adds the pid label itself ("liveall"), dropped when the worker
            # is marked dead; a single process labels its own series.
            worker_blocked=Gauge(PREFIX + "worker_loop_blocked_seconds",
                                 "Seconds the loop has been frozen right now, per "
                                 "process (pid).",
                                 labels if multiprocess_dir() else ("loop", "pid"),
                                 registry=reg, multiprocess_mode="liveall"),
            server_skipped=Counter(PREFIX + "metrics_server_skipped_total",
                                   "Processes that found metrics_port taken and serve no "
                                   "metrics themselves (another worker does).",
                                   registry=reg),
            pid_label=not multiprocess_dir(),
        )
        _families[reg] = fam
        return fam


def in_use() -> bool:
    """True once install() created metrics in this process."""
    return len(_families) > 0


def _registry_of(w: Any) -> CollectorRegistry | None:
    return getattr(w.config, "registry", None)


def bind(w: Any) -> _Bound:
    """The label children for handle ``w`` (re-bound if its name changed)."""
    name = w.name
    b: _Bound | None = _state.metric_children.get(w)
    if b is not None and b.name == name:
        return b
    fam = family(_registry_of(w))
    with _state.metrics_lock:
        nb = _Bound(
            name, fam, fam.lag.labels(name), fam.freezes.labels(name),
            fam.freeze_duration.labels(name), fam.blocked.labels(name),
            fam.last_heartbeat.labels(name), fam.tasks.labels(name), fam.dumps.labels(name),
            fam.dump_failures.labels(name), fam.stalls.labels(name),
            _worker_child(fam, name),
            multiprocess=multiprocess_dir() is not None,
        )
        # Scrape-time value (single process); the watchdog's set() below is
        # what multiprocess scrapes read. A weak reference: the registry must
        # not keep an uninstalled handle alive.
        ref = weakref.ref(w)
        nb.blocked.set_function(lambda: _blocked_now(ref))
        nb.worker_blocked.set_function(lambda: _blocked_now(ref))
        if b is not None and b.name != name:
            _remove_gauges(b)
        _state.metric_children[w] = nb
    return nb


def _worker_child(fam: _Family, name: str) -> Any:
    if not fam.pid_label:
        return fam.worker_blocked.labels(name)
    return fam.worker_blocked.labels(name, str(os.getpid()))


def server_skipped(registry: Any) -> None:
    """This process found metrics_port taken (install time)."""
    family(registry).server_skipped.inc()


def _blocked_now(ref: weakref.ref[Any]) -> float:
    w = ref()
    return float(w.blocked_for()) if w is not None and not w.closed else 0.0


def _remove_gauges(b: _Bound) -> None:
    """Drop a loop's gauge series (a loop no longer watched has no current value).
    Counters and histograms stay, so rate() over them stays correct."""
    for g in (b.family.blocked, b.family.last_heartbeat, b.family.tasks):
        with contextlib.suppress(KeyError):  # never had a value
            g.remove(b.name)
    with contextlib.suppress(KeyError, ValueError):
        if not b.family.pid_label:
            b.family.worker_blocked.remove(b.name)
        else:
            b.family.worker_blocked.remove(b.name, str(os.getpid()))


def forget(w: Any) -> None:
    """Handle ``w`` is no longer watched: its gauges leave the registry."""
    with _state.metrics_lock:
        b = _state.metric_children.pop(w, None)
        if b is not None and not any(o.name == b.name for o in _state.metric_children.values()):
            _remove_gauges(b)
            if multiprocess_dir():  # the value file keeps the last value: make it 0
                b.blocked.set(0.0)
                b.worker_blocked.set(0.0)
                b.last_heartbeat.set(0.0)  # not watched: not "silent" (see _sinks.workers)


def after_fork() -> None:
    """In a forked child: label children of the parent's handles are not ours."""
    _state.metrics_lock = threading.Lock()  # may have been held by a thread that is gone
    _state.metric_children.clear()


def sample(w: Any, now: float) -> None:
    """Once per watchdog round: the gauges only the watchdog can keep current.

    Kept to a dict lookup and a comparison in the common case: it runs every
    ``interval`` and the round's length matters (the suspension guard)."""
    b = _state.metric_children.get(w)  # bound at the loop's first answered heartbeat (lag())
    if b is None or w.closed or w.loop is None:
        return
    blocked = w.blocked_for()
    if b.multiprocess:  # single process: the function gauge is exact
        b.blocked.set(blocked)
        b.worker_blocked.set(blocked)
    if now - b.tasks_sampled_at >= TASKS_SAMPLE_EVERY and blocked == 0.0:
        b.tasks_sampled_at = now
        from .._snapshot.tasks import all_tasks

        b.tasks.set(len(all_tasks(w.loop)))


# -- events from the watchdog (called where they happen: _watchdog, _pipeline) --

def lag(w: Any, seconds: float) -> None:
    b = bind(w)
    b.lag.observe(seconds)
    b.last_heartbeat.set(time.time())


def freeze_detected(w: Any) -> None:
    bind(w).freezes.inc()


def freeze_ended(w: Any, seconds: float) -> None:
    """The loop answered again (or was dropped): the freeze's full duration."""
    b = bind(w)
    b.freeze_duration.observe(seconds)
    b.last_heartbeat.set(time.time())
    b.blocked.set(0.0)
    b.worker_blocked.set(0.0)


def stall_detected(w: Any) -> None:
    bind(w).stalls.inc()


def dump_written(w: Any) -> None:
    bind(w).dumps.inc()


def dump_failed(w: Any) -> None:
    bind(w).dump_failures.inc()
