"""Stalls: watch() units still open past their ``stall_after`` while the loop
is alive (watchdog thread; ``stall_ended`` on the loop thread)."""

from __future__ import annotations

import dataclasses
import time

from . import _report
from ._events import FreezeEvent
from ._inflight import Unit
from ._inflight import snapshot as inflight_snapshot
from ._loopstate import LoopState
from ._sinks import metrics as _metrics
from ._snapshot.capture import capture
from ._snapshot.model import NATIVE_OFF

STALL_SCAN_EVERY = 0.5


class StallReports(LoopState):
    """One stall dump per overdue unit, and its end."""

    def _scan_stalls(self, now: float) -> None:
        for unit in inflight_snapshot(self.inflight):
            limit = unit.stall_after if unit.stall_after is not None else self.config.stall_after
            if unit.stalled_at is None and now - unit.started >= limit:
                unit.stalled_at = now
                self._report_stall(unit, now, limit)

    def _report_stall(self, unit: Unit, now: float, limit: float) -> None:
        assert self.loop is not None
        age = now - unit.started
        rec = unit.record(now)
        snap = capture(
            kind="stall", loop=self.loop, info=self._info(), detected_at=time.time(),
            blocked_for=age, threshold=limit, inflight=self._inflight_records(now, unit.task),
            native=NATIVE_OFF, stalled_task=unit.task, extra={"stalled": rec.to_json()},
            waits=self.waits,
        )
        self.stalls += 1
        _metrics.stall_detected(self)
        path = None
        reason = None
        window = self.config.dump_rate_window
        # The application's line is part of a stall's signature: stalls of
        # different requests often share the library frame they wait in.
        af = snap.app_frame
        sig = "stall " + snap.blocking_frame.where + (" / " + af.where if af else "")
        if _report.rate_limited(sig, window):
            reason = "rate limited"
        else:
            path = _report.write(self, snap, signature=sig)
        ev = _report.event_for("stall_detected", self, snap, age, path, reason)
        _report.emit(self, dataclasses.replace(ev, reason=reason or f"{unit.kind} {unit.name!r}"),
                     snap=snap)

    def stall_ended(self, unit: Unit) -> None:
        """Called on the loop thread when a stalled unit finally finishes."""
        _report.emit(self, FreezeEvent("stall_ended", self.name,
                                       round(time.monotonic() - unit.started, 3),
                                       reason=f"{unit.kind} {unit.name!r}"), "info")
