"""OpenTelemetry sink: metrics through the OTel API and one log record per freeze/stall.

Nothing here configures OpenTelemetry: the instruments come from the
application's ``MeterProvider`` and the log records go to its
``LoggerProvider``, exported by its own readers and processors. The
opentelemetry packages are imported only when ``freezewatch.otel`` turns the
sink on; ``record_lag`` (called by the watchdog per answered heartbeat) costs
one global load and a None check while it is off.

Threads: ``deliver`` runs on the ``freezewatch-events`` thread, ``record_lag``
on the watchdog thread, the blocked gauge's callback on the application's
metric reader thread. The SDK's instruments take their own short locks; the
loop thread never touches them, so a frozen loop cannot hold one.

Metric names and their Prometheus twins (``docs/integrations.md``):

====================================== ======================================
OpenTelemetry                          Prometheus (``_sinks/metrics.py``)
====================================== ======================================
``freezewatch.eventloop.delay``        ``freezewatch_loop_lag_seconds``
``freezewatch.eventloop.freeze.duration`` ``freezewatch_freeze_duration_seconds``
``freezewatch.eventloop.freezes``      ``freezewatch_freezes_total``
``freezewatch.eventloop.stalls``       ``freezewatch_stalls_total``
``freezewatch.eventloop.blocked``      ``freezewatch_loop_blocked_seconds``
====================================== ======================================
"""

from __future__ import annotations

import collections
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from .._snapshot.model import Snapshot
from . import metrics as _prom
from . import scrub
from .report import Report

LOOP_ATTR = "freezewatch.loop.name"
SCOPE = "freezewatch"
MAX_OPEN = 1000
"""Freezes remembered between their detection and their end (for the trace ids)."""

BlockedSource = Callable[[], Mapping[str, float]]
_blocked_source: BlockedSource | None = None
_active: Instruments | None = None
"""The instruments while the sink is on; None: ``record_lag`` returns at once."""
failures = 0
"""Exceptions raised by the OTel API in ``record_lag`` or the gauge callback."""


def _clean(text: str | None) -> str | None:
    """Every string from the application passes here (the redaction rule)."""
    return scrub.field(text)


def record_lag(loop_name: str, seconds: float) -> None:
    """One answered heartbeat's delay (watchdog thread). Off: one None check."""
    a = _active
    if a is None:
        return
    try:
        a.lag.record(seconds, a.attrs(loop_name))
    except Exception:  # boundary: the application's metrics SDK
        global failures
        failures += 1


def set_blocked_source(source: BlockedSource | None) -> None:
    """``source()`` -> ``{loop_name: seconds blocked right now}``, read at collection."""
    global _blocked_source
    _blocked_source = source


class Instruments:
    """The OTel instruments of one meter (created once per ``instrument()``)."""

    def __init__(self, meter_provider: Any = None, version: str = "") -> None:
        from opentelemetry import metrics

        meter = metrics.get_meter(SCOPE, version, meter_provider=meter_provider)
        self._attrs: dict[str, dict[str, str]] = {}
        self.lag = meter.create_histogram(
            "freezewatch.eventloop.delay", unit="s",
            description="Delay between sending a heartbeat to the event loop and the loop "
                        "running it (a freeze counts with its full duration).",
            explicit_bucket_boundaries_advisory=list(_prom.LAG_BUCKETS))
        self.duration = meter.create_histogram(
            "freezewatch.eventloop.freeze.duration", unit="s",
            description="Full duration of each freeze, recorded when it ends.",
            explicit_bucket_boundaries_advisory=list(_prom.DURATION_BUCKETS))
        self.freezes = meter.create_counter(
            "freezewatch.eventloop.freezes", unit="{freeze}",
            description="Freezes: heartbeats not answered within the threshold.")
        self.stalls = meter.create_counter(
            "freezewatch.eventloop.stalls", unit="{stall}",
            description="Units of work still open after their stall_after.")
        self.blocked = meter.create_observable_gauge(
            "freezewatch.eventloop.blocked", callbacks=[self._observe_blocked], unit="s",
            description="Seconds the event loop has been frozen right now (0 when it answers).")

    def attrs(self, loop_name: str) -> dict[str, str]:
        """The attribute set of a loop, built once (no allocation per heartbeat)."""
        a = self._attrs.get(loop_name)
        if a is None:
            a = self._attrs[loop_name] = {LOOP_ATTR: _clean(loop_name) or ""}
        return a

    def _observe_blocked(self, _options: Any) -> Iterable[Any]:
        from opentelemetry.metrics import Observation

        source = _blocked_source
        if source is None:
            return []
        try:
            values = dict(source())
        except Exception:  # boundary: reading the handles from the reader's thread
            global failures
            failures += 1
            return []
        return [Observation(float(s), self.attrs(name)) for name, s in values.items()]


class OTelSink:
    """Counters, the freeze-duration histogram and a log record per freeze or stall."""

    name = "otel"

    def __init__(self, instruments: Instruments, logger_provider: Any = None,
                 version: str = "") -> None:
        from opentelemetry import _logs

        self.instruments = instruments
        self.logger = _logs.get_logger(SCOPE, version, logger_provider=logger_provider)
        # Only the freezewatch-events thread calls deliver(): no lock (none to be
        # left held in a forked child either).
        self._open: collections.OrderedDict[Any, tuple[str, str] | None] = (
            collections.OrderedDict())

    def deliver(self, report: Report) -> None:
        ev = report.event
        ins = self.instruments
        attrs = ins.attrs(ev.loop)
        snap = report.snapshot
        if ev.event == "freeze_detected":
            ins.freezes.add(1, attrs)
        elif ev.event == "stall_detected":
            ins.stalls.add(1, attrs)
        elif ev.event == "freeze_ended":
            ins.duration.record(ev.seconds, attrs)
            self._ended(report)
            return
        if snap is None or ev.event not in ("freeze_detected", "freeze_updated",
                                            "stall_detected"):
            return
        span = _span_of(snap)
        if ev.event == "freeze_detected":
            self._remember(_key(report), span)
        self._emit(snap, report, span)

    # -- log records --

    def _emit(self, snap: Snapshot, report: Report, span: tuple[str, str] | None) -> None:
        from opentelemetry._logs import SeverityNumber

        doc = report.doc or {}
        ev = report.event
        attrs: dict[str, Any] = {
            LOOP_ATTR: _clean(ev.loop), "freezewatch.kind": snap.kind,
            "freezewatch.blocked_for": round(snap.blocked_for, 3),
            "freezewatch.blocking_frame": _clean(snap.blocking_frame.where),
            "code.file.path": _clean(snap.blocking_frame.file),
            "code.line.number": snap.blocking_frame.line,
            "code.function.name": _clean(snap.blocking_frame.function),
        }
        optional = {
            "freezewatch.app_frame": snap.app_frame.where if snap.app_frame else None,
            "freezewatch.dump_path": ev.dump_path,
            "freezewatch.task": snap.current_task if snap.kind != "stall"
            else (doc.get("stalled") or {}).get("task"),
            "freezewatch.request": (doc.get("request") or {}).get("name")
            or (doc.get("stalled") or {}).get("name"),
            "freezewatch.cause": doc.get("cause"),
            "freezewatch.reason": ev.reason,
        }
        attrs.update({k: _clean(str(v)) for k, v in optional.items() if v is not None})
        if doc.get("gil_held") is not None:
            attrs["freezewatch.gil_held"] = bool(doc["gil_held"])
        self.logger.emit(
            timestamp=int(snap.detected_at * 1e9), context=_context_of(span),
            severity_number=SeverityNumber.WARN, severity_text="WARN",
            body=_clean(headline(doc)), attributes=attrs,
            event_name="freezewatch." + snap.kind.replace("-", "."),
        )

    def _ended(self, report: Report) -> None:
        from opentelemetry._logs import SeverityNumber

        ev = report.event
        span = self._open.pop(_key(report), None)
        attrs: dict[str, Any] = {LOOP_ATTR: _clean(ev.loop), "freezewatch.kind": "freeze",
                                 "freezewatch.duration": ev.seconds}
        for k, v in (("freezewatch.blocking_frame", ev.blocked_at),
                     ("freezewatch.dump_path", ev.dump_path), ("freezewatch.reason", ev.reason)):
            if v is not None:
                attrs[k] = _clean(v)
        self.logger.emit(
            context=_context_of(span), severity_number=SeverityNumber.INFO,
            severity_text="INFO", attributes=attrs, event_name="freezewatch.freeze.ended",
            body=_clean(f"FREEZE ENDED: event loop {ev.loop!r} was blocked for "
                        f"{ev.seconds:.3f} s at {ev.blocked_at}"),
        )

    def _remember(self, key: Any, span: tuple[str, str] | None) -> None:
        self._open[key] = span
        while len(self._open) > MAX_OPEN:
            self._open.popitem(last=False)


def _key(report: Report) -> Any:
    """One freeze across its events: the pipeline's id, else its dump, else its loop."""
    if report.freeze_id is not None:
        return ("id", report.freeze_id)
    ev = report.event
    return ("dump", ev.dump_path) if ev.dump_path else ("loop", ev.loop)


def _span_of(snap: Snapshot) -> tuple[str, str] | None:
    t = snap.extra.get("otel_trace")
    if isinstance(t, dict) and t.get("trace_id") and t.get("span_id"):
        return str(t["trace_id"]), str(t["span_id"])
    return None


def _context_of(span: tuple[str, str] | None) -> Any:
    """An OTel Context carrying the request's span (so the record joins its trace),
    or an empty one: never the events thread's own current context."""
    from opentelemetry import context, trace

    if span is None:
        return context.Context()
    sc = trace.SpanContext(int(span[0], 16), int(span[1], 16), is_remote=False)
    return trace.set_span_in_context(trace.NonRecordingSpan(sc), context.Context())


def headline(doc: Mapping[str, Any]) -> str:
    """The first line of the dump's .txt (``FREEZE: event loop ... blocked for ...``)."""
    from .._snapshot.render import render

    return render(dict(doc)).split("\n", 1)[0]
