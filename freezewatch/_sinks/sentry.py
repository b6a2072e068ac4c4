"""Sentry sink: one Sentry event per freeze and per stall, sent while the loop is frozen.

The event is a message event (level warning, no exception) whose ``threads``
interface holds the blocked thread's stack, oldest frame first as Sentry
wants it, so the blocking frame is the last (top) frame. Its fingerprint is
``["freezewatch", kind, "file:line in function"]``: Sentry groups the freezes
of a whole fleet by the line they block on. Tags: loop, kind, gil_held, cause.
The request in flight is the event's ``request`` (method and path, query
redacted); the dump's ``.txt`` rides along as an attachment.

When the freeze ends, one small follow-up event (level info, fingerprint
``["freezewatch", "freeze-ended", where]``, so it never inflates the freeze's
own issue) carries the final duration and the id of the freeze's event.

Rate limit: at most one event per signature (kind + blocking frame, plus the
application frame for a stall, as for dumps) per ``dump_rate_window``; the
core's dump limit is not reused because an event also goes out when a dump
failed. Everything is built on the ``freezewatch-events`` thread in a forked
isolation scope (nothing leaks into the application's scopes, nothing of
theirs but the global scope's into ours); ``capture_event`` only queues the
envelope for the SDK's transport thread, so a slow Sentry never blocks.
"""

from __future__ import annotations

import collections
import os
import time
from collections.abc import Callable
from typing import Any, cast

from .._snapshot.frames import is_app_file
from .._snapshot.model import Snapshot
from . import scrub
from .otel import headline
from .report import Report

MAX_ATTACHMENT = 2_000_000
"""Bytes of the .txt attached (a larger one is cut, with a marker)."""
MAX_TAG = 200  # Sentry's limit for a tag value
MAX_OPEN = 1000
HTTP_METHODS = frozenset(
    ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "CONNECT", "TRACE"])


def _clean(text: str | None) -> str | None:
    """Every string from the application passes here (the redaction rule)."""
    return scrub.field(text)


class SentrySink:
    name = "sentry"

    def __init__(self, window_of: Callable[[str], float], clock: Callable[[], float]
                 = time.monotonic) -> None:
        self._window_of = window_of
        self._clock = clock
        # Only the freezewatch-events thread calls deliver(): no lock (none to be
        # left held in a forked child either).
        self._last_sent: dict[str, float] = {}
        # freeze -> (its event id, where, tags, contexts.trace) until it ends
        self._open: collections.OrderedDict[
            Any, tuple[str, str, dict[str, str], dict[str, Any] | None]] = (
            collections.OrderedDict())
        self.sent = 0
        self.rate_limited = 0

    def deliver(self, report: Report) -> None:
        import sentry_sdk

        if not sentry_sdk.get_client().is_active():  # Sentry not (or no longer) initialised
            return
        ev = report.event
        if ev.event in ("freeze_detected", "stall_detected") and report.snapshot is not None:
            self._detected(report, report.snapshot)
        elif ev.event == "freeze_ended":
            self._ended(report)

    def _allowed(self, signature: str, loop: str) -> bool:
        window = self._window_of(loop)
        now = self._clock()
        last = self._last_sent.get(signature)
        if last is not None and now - last < window:
            self.rate_limited += 1
            return False
        self._last_sent[signature] = now
        if len(self._last_sent) > 10 * MAX_OPEN:  # old signatures cannot limit anything
            self._last_sent = {s: t for s, t in self._last_sent.items() if now - t < window}
        return True

    def _detected(self, report: Report, snap: Snapshot) -> None:
        import sentry_sdk

        doc: dict[str, Any] = dict(report.doc or {})
        ev = report.event
        where = snap.blocking_frame.where
        signature = f"{snap.kind} {where}"
        if snap.kind == "stall" and snap.app_frame is not None:
            signature += " / " + snap.app_frame.where
        if not self._allowed(signature, ev.loop):
            return
        tags = {"loop": ev.loop, "kind": snap.kind,
                "gil_held": "true" if doc.get("gil_held") else "false"}
        if doc.get("cause"):
            tags["cause"] = str(doc["cause"])
        tags = {k: (_clean(v) or "")[:MAX_TAG] for k, v in tags.items()}
        event: dict[str, Any] = {
            "level": "warning",
            "logger": "freezewatch",
            "message": _clean(headline(doc)),
            "fingerprint": ["freezewatch", snap.kind, _clean(where)],
            "tags": tags,
            "threads": {"values": [_thread(snap, doc)]},
            "contexts": {"freezewatch": _context(snap, doc, ev.dump_path, ev.reason)},
        }
        request = _request(doc)
        if request:
            event["request"] = request
        # The request's trace (freezewatch._snapshot.otel_context): Sentry's own, else
        # OTel's. Without either, the SDK gives the event the events thread's trace.
        trace = doc.get("sentry_trace") or doc.get("otel_trace")
        if isinstance(trace, dict):
            event["contexts"]["trace"] = {"trace_id": trace.get("trace_id"),
                                          "span_id": trace.get("span_id")}
        with sentry_sdk.isolation_scope() as scope:
            txt = _attachment(ev.dump_path)
            if txt is not None:
                scope.add_attachment(bytes=txt[1], filename=txt[0], content_type="text/plain")
            event_id = scope.capture_event(cast(Any, event))
        self.sent += 1
        if event_id and snap.kind == "freeze":
            self._open[_key(report)] = (event_id, where, tags,
                                        event["contexts"].get("trace"))
            while len(self._open) > MAX_OPEN:
                self._open.popitem(last=False)

    def _ended(self, report: Report) -> None:
        import sentry_sdk

        ev = report.event
        opened = self._open.pop(_key(report), None)
        if opened is None:  # its freeze was rate limited (or never sent): nothing to close
            return
        event_id, where, tags, trace = opened
        event: dict[str, Any] = {
            "level": "info",
            "logger": "freezewatch",
            "message": _clean(f"FREEZE ENDED: event loop {ev.loop!r} was blocked for "
                              f"{ev.seconds:.3f} s at {where}"),
            "fingerprint": ["freezewatch", "freeze-ended", _clean(where)],
            "tags": {**tags, "kind": "freeze-ended"},
            "contexts": {"freezewatch": {"duration": ev.seconds, "freeze_event_id": event_id,
                                         "blocking_frame": _clean(where),
                                         "dump_path": _clean(ev.dump_path),
                                         "reason": _clean(ev.reason)}},
        }
        if trace is not None:
            event["contexts"]["trace"] = trace
        with sentry_sdk.isolation_scope() as scope:
            scope.capture_event(cast(Any, event))
        self.sent += 1


def _key(report: Report) -> Any:
    """One freeze across its events: the pipeline's id, else its dump, else its loop."""
    if report.freeze_id is not None:
        return ("id", report.freeze_id)
    ev = report.event
    return ("dump", ev.dump_path) if ev.dump_path else ("loop", ev.loop)


def _frames(snap: Snapshot, doc: dict[str, Any]) -> list[dict[str, Any]]:
    """Sentry frames, oldest first: the blocking frame is the last one."""
    if snap.kind == "stall":
        raw = [(f.get("file"), f.get("line"), f.get("function"), f.get("code"))
               for f in doc.get("await_chain") or ()]
    else:
        raw = [(f.file, f.line, f.function, f.code) for f in snap.loop_frames]
    if not raw:
        bf = snap.blocking_frame
        raw = [(bf.file, bf.line, bf.function, bf.code)]
    return [{"filename": _clean(file), "abs_path": _clean(file), "lineno": line,
             "function": _clean(function), "context_line": _clean(code),
             "in_app": bool(file) and is_app_file(str(file))}
            for file, line, function, code in raw]


def _thread(snap: Snapshot, doc: dict[str, Any]) -> dict[str, Any]:
    name = snap.loop.thread_name or snap.loop.name
    if snap.kind == "stall":
        name = f"task {(doc.get('stalled') or {}).get('task') or '?'} (stalled, loop alive)"
    return {"id": snap.loop.thread_id, "name": _clean(name), "crashed": False,
            "current": True, "stacktrace": {"frames": _frames(snap, doc)}}


def _context(snap: Snapshot, doc: dict[str, Any], dump_path: str | None,
             reason: str | None) -> dict[str, Any]:
    ctx: dict[str, Any] = {
        "blocked_for": round(snap.blocked_for, 3), "threshold": snap.threshold,
        "blocking_frame": snap.blocking_frame.where,
        "app_frame": snap.app_frame.where if snap.app_frame else None,
        "task": snap.current_task if snap.kind != "stall"
        else (doc.get("stalled") or {}).get("task"),
        "dump_path": dump_path, "reason": reason, "cause": doc.get("cause"),
        "inflight": [f"{u.kind} {u.name} ({u.age:.1f} s)" for u in snap.inflight[:20]],
    }
    return {k: ([_clean(x) for x in v] if isinstance(v, list) else
                _clean(v) if isinstance(v, str) else v) for k, v in ctx.items()}


def _request(doc: dict[str, Any]) -> dict[str, str] | None:
    """Sentry's request interface from the in-flight unit's name (``GET /path``)."""
    unit = doc.get("request") or doc.get("stalled") or {}
    name = unit.get("name") if isinstance(unit, dict) else None
    if not name:
        return None
    method, _, url = str(name).partition(" ")
    if method.upper() not in HTTP_METHODS or not url:
        return None
    return {"method": method.upper(), "url": _clean(url) or ""}


def _attachment(dump_path: str | None) -> tuple[str, bytes] | None:
    """The dump's .txt twin (written before the event), redacted, as bytes."""
    if not dump_path or not dump_path.endswith(".json"):
        return None
    txt = dump_path[: -len(".json")] + ".txt"
    try:
        # O_NOFOLLOW: the dump directory is ours, but never follow a planted link
        fd = os.open(txt, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
        with os.fdopen(fd, "rb") as f:
            data = f.read(MAX_ATTACHMENT + 1)
    except OSError:
        return None
    text = scrub.clean(data.decode("utf-8", "replace"))
    if len(data) > MAX_ATTACHMENT:
        text = text[:MAX_ATTACHMENT] + "\n[... cut by freezewatch]\n"
    return os.path.basename(txt), text.encode()
