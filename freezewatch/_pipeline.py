"""From a decision to the sinks: capture, rate limit, dump files, metrics, events.

The one place a detector decision becomes evidence. For each freeze or
stall: ``capture()`` once (plain data, never mutated afterwards), the rate
limit by signature, the dump pair, the metrics, and one ``Report`` to the
log, the hooks and the optional sinks. What is learned later about a freeze
(py-spy's native trace, its duration, why it ended) is kept beside the
snapshot as typed facts (``Record``) and the dump is rewritten from the two;
the JSON document of the snapshot is built once per dump.

Watchdog thread only, except ``LoopWatch.stall_ended`` (loop thread), which
emits through the log sink directly. Sinks are isolated: a dump that cannot
be written is counted and reported as ``dump_failed``, the event still goes
out; the log and optional sinks run on their own thread.
"""

from __future__ import annotations

import asyncio
import dataclasses
import itertools
import os
import time
from typing import Any

from . import _detect, _gil, _redact, _state
from ._events import FreezeEvent
from ._faulthandler import Capture
from ._gil_pin import sentinel_pin, unseen_reason
from ._handle import LoopWatch
from ._inflight import records as inflight_records
from ._inflight import snapshot as inflight_snapshot
from ._native_jobs import NativeJobs
from ._sinks import metrics as _metrics
from ._sinks.dumpfile import dump_name, rewrite_dump, write_dump
from ._sinks.log import events
from ._sinks.report import Report
from ._snapshot.capture import capture
from ._snapshot.cause import held_gil
from ._snapshot.model import NATIVE_OFF, NATIVE_PENDING, Frame, Native, Snapshot

NOT_SEEN = Frame("<not captured>", 0, "<freeze not seen live>", None)
_report_ids = itertools.count(1)


@dataclasses.dataclass
class Record:
    """One dump and the facts learned after its capture."""

    snap: Snapshot
    base: dict[str, Any]
    """``snap.to_json()``, built once."""
    path: str | None
    report_id: int
    signature: str
    native: Native | None = None
    duration: float | None = None
    ended_because: str | None = None
    measured_by: str | None = None

    def doc(self) -> dict[str, Any]:
        """The dump's JSON: the snapshot's document with the later facts on top."""
        doc = dict(self.base)
        if self.native is not None:
            doc["native"] = self.native.to_json()
        if self.measured_by is not None:
            doc["duration_measured_by"] = self.measured_by
        if self.duration is not None:
            doc["duration"] = round(self.duration, 6)
        if self.ended_because:
            doc["ended_because"] = self.ended_because
        return doc


# -- the sinks ------------------------------------------------------------------------

def emit(w: LoopWatch | None, event: FreezeEvent, level: str = "warning",
         snap: Snapshot | None = None, report_id: int | None = None) -> None:
    """One report to the log, the handle's hooks and the optional sinks."""
    events.emit(event, w.hooks if w is not None else (), level,
                Report(event, snap, report_id, level))


def _write(w: LoopWatch, doc: dict[str, Any], signature: str | None) -> str | None:
    """A new dump pair; its .json path, None on failure (then ``w.last_dump_error``
    says why). A written dump starts the rate-limit window of ``signature``; a
    failed one does not, so the next freeze at that frame is dumped once the
    directory is writable again."""
    cfg = w.config
    try:
        name = dump_name(doc["kind"], doc["detected_at"], next(_state.dump_seq))
        path = write_dump(cfg.dump_dir, name, doc, cfg.max_dumps, cfg.max_dump_bytes,
                          redact=cfg.redact)
    except Exception as e:  # boundary: the dump-file sink (full disk, directory gone, ...)
        w.last_dump_error = _failed(w, doc, e)
        return None
    if signature is not None:
        _state.last_dump_by_signature[signature] = time.monotonic()
    w.dumps.append(path)
    _metrics.dump_written(w)
    return path


def _adopt(w: LoopWatch, path: str, doc: dict[str, Any], signature: str) -> str | None:
    """The sentinel's dump of this freeze, taken over (rewritten by the caller): it
    counts as the watchdog's dump, and starts the rate-limit window."""
    _state.last_dump_by_signature[signature] = time.monotonic()
    w.dumps.append(path)
    _metrics.dump_written(w)
    return path


def _rewrite(w: LoopWatch, rec: Record) -> None:
    if rec.path is None:
        return
    doc = rec.doc()
    cfg = w.config
    try:
        # Retention runs after every rewrite: the dump just grew (native, duration).
        if not rewrite_dump(rec.path, doc, cfg.max_dumps, cfg.max_dump_bytes,
                            redact=cfg.redact):
            rec.path = None  # retention removed it meanwhile: it stays removed
    except Exception as e:  # boundary: the dump-file sink
        _failed(w, doc, e)


def _failed(w: LoopWatch, doc: dict[str, Any], e: Exception) -> str:
    w.dump_failures += 1
    _metrics.dump_failed(w)
    reason = _redact.apply(w.config.redact, f"{type(e).__name__}: {e}")
    emit(w, FreezeEvent("dump_failed", w.name, doc.get("blocked_for", 0.0), reason=reason),
         "error")
    return reason


def _limited(signature: str, window: float) -> bool:
    return _detect.rate_limited(_state.last_dump_by_signature.get(signature),
                                time.monotonic(), window)


def _event(name: str, w: LoopWatch, snap: Snapshot, seconds: float, path: str | None,
           reason: str | None) -> FreezeEvent:
    return FreezeEvent(name, w.name, round(seconds, 3), blocked_at=snap.blocking_frame.where,
                       app_line=snap.app_frame.where if snap.app_frame else None,
                       dump_path=path, reason=reason)


def _capture(w: LoopWatch, kind: str, blocked_for: float, **more: Any) -> Snapshot:
    assert w.loop is not None
    cfg = w.config
    now = time.monotonic()
    subject = more.pop("subject", None)
    more.setdefault("native", NATIVE_PENDING if cfg.native else NATIVE_OFF)
    return capture(kind=kind, loop=w.loop, info=w.info(), detected_at=time.time(),
                   blocked_for=blocked_for, threshold=more.pop("threshold", cfg.threshold),
                   inflight=_inflight(w, now, subject), waits=w.waits,
                   contextvars=cfg.contextvars, **more)


def _inflight(w: LoopWatch, now: float, subject: Any = None) -> Any:
    """Units in flight; those of ``subject`` (default: the running task) are marked."""
    if subject is None and w.loop is not None:
        try:
            subject = asyncio.current_task(w.loop)
        except Exception:  # a foreign loop type: no task to mark
            subject = None
    return inflight_records(w.inflight, now, subject)


# -- freezes ----------------------------------------------------------------------------

class Pipeline:
    """Open freezes' records, by (handle, freeze id). One per watchdog."""

    def __init__(self) -> None:
        self.open: dict[tuple[int, int], Record] = {}
        self.native = NativeJobs()  # py-spy runs off the watchdog thread

    def apply_native(self, wait: float = 0.0) -> None:
        """Each round: py-spy traces taken since, into their dumps."""
        if not self.native.waiting:
            return  # the common round: nothing in flight, no queue poll
        for w, rec, native in self.native.done(wait):
            rec.native = native
            _rewrite(w, rec)

    def close(self) -> None:
        """Watching stops: wait a little for py-spy runs in flight, then stop; a dump
        whose run did not finish says so (never "still running" for good)."""
        if self.native.waiting:
            self.apply_native(wait=1.0)
        for w, rec in list(self.native.waiting.values()):
            rec.native = Native(False, error="py-spy had not finished when watching stopped")
            _rewrite(w, rec)
        self.native.waiting.clear()
        self.native.stop()

    def freeze(self, w: LoopWatch, *, start: float, age: float, late: bool,
               since: float | None = None, cap: Capture | None = None,
               pin: tuple[tuple[Frame, ...], Native] | None = None) -> Record:
        """Capture and report a freeze: live (``late`` False, the loop still
        frozen), or one seen only afterwards, pinned on a stack captured
        during it (faulthandler's ``cap``, or the sentinel's py-spy ``pin``).

        If the sentinel wrote this freeze's dump while no Python thread could
        run (``_gil.GilLayers.sentinel_dump``), that file is completed under
        its name (``complete: true``) instead of a new one being written."""
        cfg = w.config
        tid = w.thread_ident
        frames = pin[0] if pin is not None else (cap.frames_of(tid) if cap else None)
        gl = _gil.layers()
        reuse = gl.sentinel_dump(w.state.sent_at if since is None else since, tid) \
            if gl is not None else None
        snap = _capture(w, "freeze", time.monotonic() - start, cpu_before=w.sent_cpu)
        by = "py-spy (sentinel)" if pin is not None else "faulthandler"
        if frames is not None:
            # The live stack is from after the GIL came back: pin on the one
            # captured during the freeze; the cause is how it was seen.
            snap = _gil.pin(snap, frames, age if late else snap.blocked_for, cap,
                            captured_by=by)
            snap = dataclasses.replace(snap, extra=held_gil(
                snap.extra, snap.loop_frames, tid, snap.blocked_for, time.monotonic(),
                slack=2 * cfg.interval + 0.1))
        if reuse is not None:
            snap = dataclasses.replace(snap, detected_at=reuse[1], extra={
                **snap.extra, "complete": True,
                "written_by": "sentinel (during the freeze), completed by the watchdog"})
        _metrics.freeze_detected(w)
        sig = snap.blocking_frame.where
        path = reason = None
        doc = snap.to_json()
        if reuse is not None:
            path = _adopt(w, reuse[0], doc, sig)
            reason = "GIL held: dump written by the sentinel during the freeze, completed"
        elif _limited(sig, cfg.dump_rate_window):
            reason = (f"rate limited: a dump for this frame was written in the last "
                      f"{cfg.dump_rate_window:g} s")
        else:
            path = _write(w, doc, sig)
            if path is None:
                reason = f"dump_failed: {w.last_dump_error}"  # the event says why, not a None
            elif frames is not None:
                reason = f"GIL held: stacks captured by {by} during the freeze"
        rec = Record(snap, doc, path, next(_report_ids), sig)
        emit(w, _event("freeze_detected", w, snap, snap.blocked_for, path, reason),
             snap=snap, report_id=rec.report_id)
        if path is None:
            return rec
        if pin is not None:
            rec.native = pin[1]
        elif cfg.native and frames is not None:
            if gl is not None:
                rec.native = gl.sentinel_native(w.state.sent_at if since is None else since,
                                                cfg.sentinel, cfg.threshold)
        elif cfg.native:
            self.native.submit(w, rec)  # rewritten when py-spy is done (apply_native)
            return rec
        if cfg.native and rec.native is None:
            # Never leave "still running (this file is rewritten)" for good.
            rec.native = Native(False, error="no native trace: the sentinel is not running",
                                source="sentinel")
        if rec.native is not None or reuse is not None:
            _rewrite(w, rec)
        return rec

    def declared(self, w: LoopWatch, d: _detect.Declared, cap: Capture | None) -> None:
        self.open[(id(w), d.freeze_id)] = self.freeze(w, start=d.start, age=d.age,
                                                      late=False, cap=cap)

    def update(self, w: LoopWatch, d: _detect.UpdateDue) -> None:
        rec = self.open.get((id(w), d.freeze_id))
        snap = _capture(w, "freeze-update", d.age, cpu_before=w.sent_cpu)
        bf = snap.blocking_frame
        moved = rec is not None and bf.where != rec.signature
        snap = dataclasses.replace(snap, extra={
            **snap.extra, "frame_moved": moved, "update": d.update,
            "first_dump": os.path.basename(rec.path) if rec and rec.path else None})
        doc = snap.to_json()
        path = _write(w, doc, None)
        upd = Record(snap, doc, path, rec.report_id if rec else 0, bf.where)
        if rec is not None:
            rec.signature = bf.where  # "moved" compares with the latest dump
        why = "blocking frame moved" if moved else "blocking frame unchanged"
        emit(w, _event("freeze_updated", w, snap, d.age, path,
                       why if path else f"{why}; dump_failed: {w.last_dump_error}"),
             snap=snap, report_id=upd.report_id)
        if path and w.config.native:
            self.native.submit(w, upd)

    def ended(self, w: LoopWatch, d: _detect.Ended) -> None:
        rec = self.open.pop((id(w), d.freeze_id), None)
        self._end(w, rec, d.duration, d.reason)

    def _end(self, w: LoopWatch, rec: Record | None, duration: float,
             reason: str | None = None) -> None:
        _metrics.freeze_ended(w, duration)
        if rec is not None and rec.path is not None:
            rec.duration, rec.ended_because = duration, reason
            _rewrite(w, rec)
        emit(w, FreezeEvent("freeze_ended", w.name, round(duration, 3),
                            blocked_at=rec.signature if rec else None,
                            dump_path=rec.path if rec else None, reason=reason),
             report_id=rec.report_id if rec else None)

    def late(self, w: LoopWatch, d: _detect.Late, cap: Capture | None) -> None:
        """A beat a threshold late that nobody saw live: pinned on faulthandler's
        capture, else on the sentinel's py-spy stack, else dumped as not seen."""
        st = w.state
        start = max(st.sent_at, w.allow_exit_at)
        pin = None if d.gil else sentinel_pin(w, d.since)
        if d.gil or pin is not None:
            st.freezes += 1
            st.late_freezes += 1
            rec = self.freeze(w, start=start, age=d.lag, late=True, cap=cap, pin=pin)
            self._end(w, rec, d.lag)
            return
        st.freezes += 1
        st.late_freezes += 1
        _metrics.freeze_detected(w)
        _metrics.freeze_ended(w, d.lag)
        reason = unseen_reason(w)
        path = self._unseen_dump(w, d.lag, reason)
        emit(w, FreezeEvent("freeze_ended", w.name, round(d.lag, 3), dump_path=path,
                            reason=reason))

    def silent(self, w: LoopWatch, d: _detect.SilentGil | _detect.SilentSentinel,
               cap: Capture | None) -> None:
        """The watchdog could not run for a threshold while no beat was out, and a
        stack captured meanwhile shows the loop busy: a GIL-held freeze as long as
        the silence."""
        pin = None
        if isinstance(d, _detect.SilentSentinel):
            pin = sentinel_pin(w, d.since, need_held_gil=True)
            if pin is None:
                return
            cap = None
        w.state.freezes += 1
        w.state.late_freezes += 1
        rec = self.freeze(w, start=w.state.sent_at, age=d.silent, late=True,
                          since=d.since, cap=cap, pin=pin)
        rec.measured_by = "watchdog silence"
        self._end(w, rec, d.silent)

    def busy_silence(self, w: LoopWatch, d: _detect.BusySilence) -> None:
        """A busy loop kept the GIL from the watchdog: not a freeze. A dump the
        sentinel wrote in that silence, before it saw the loop thread sleep, goes."""
        gl = _gil.layers()
        if gl is not None:
            gl.settle_sentinel_dumps(d.since, [(w.thread_ident, w.config)], d.silent,
                                     "a busy loop kept the watchdog from the GIL")

    def _unseen_dump(self, w: LoopWatch, lag: float, reason: str) -> str | None:
        """A dump for a freeze nobody saw: when, how long, why no stack, and the
        tasks and threads as they are now (after it). Never a guessed line."""
        if w.loop is None or _limited(NOT_SEEN.where, w.config.dump_rate_window):
            return None
        snap = _capture(w, "freeze", lag, native=Native(False, error=reason))
        extra = {**snap.extra, "seen_live": False, "duration": round(lag, 6),
                 "cause": "unknown", "kernel_summary": reason}
        snap = dataclasses.replace(snap, loop_frames=(), blocking_frame=NOT_SEEN,
                                   app_frame=None, extra=extra, waits=None)
        return _write(w, snap.to_json(), NOT_SEEN.where)

    # -- stalls ----------------------------------------------------------------------
    def scan_stalls(self, w: LoopWatch, now: float) -> None:
        for unit in inflight_snapshot(w.inflight):
            limit = unit.stall_after if unit.stall_after is not None else w.config.stall_after
            if _detect.overdue(unit.started, limit, unit.stalled_at, now):
                unit.stalled_at = now
                self._stall(w, unit, now, limit)

    def _stall(self, w: LoopWatch, unit: Any, now: float, limit: float) -> None:
        age = now - unit.started
        snap = _capture(w, "stall", age, threshold=limit, native=NATIVE_OFF,
                        subject=unit.task, stalled_task=unit.task,
                        extra={"stalled": unit.record(now).to_json()})
        w.state.stalls += 1
        _metrics.stall_detected(w)
        # The application's line is part of a stall's signature: stalls of
        # different requests often share the library frame they wait in.
        af = snap.app_frame
        sig = "stall " + snap.blocking_frame.where + (" / " + af.where if af else "")
        path, reason = None, None
        if _limited(sig, w.config.dump_rate_window):
            reason = "rate limited"
        else:
            path = _write(w, snap.to_json(), sig)
            if path is None:
                reason = f"dump_failed: {w.last_dump_error}"
        emit(w, _event("stall_detected", w, snap, age, path,
                       reason or f"{unit.kind} {unit.shown_name()!r}"),
             snap=snap, report_id=next(_report_ids))

    def forget(self, w: LoopWatch) -> None:
        for key in [k for k in self.open if k[0] == id(w)]:
            del self.open[key]
