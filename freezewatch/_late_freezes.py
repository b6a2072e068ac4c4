"""Freezes nobody saw live: a C call held the GIL (the watchdog could not run),
or the freeze ended between two checks. Pinned on a stack captured during
the freeze (faulthandler, py-spy; see _gil), or dumped as not seen live,
never with a guessed line (watchdog thread)."""

from __future__ import annotations

import dataclasses
import os
import time

from . import _gil, _report
from ._events import FreezeEvent
from ._freezes import FreezeReports
from ._loopstate import NOT_SEEN
from ._sinks import metrics as _metrics
from ._snapshot.capture import capture
from ._snapshot.model import Native


class LateFreezes(FreezeReports):
    """Turn a late heartbeat or a silent watchdog into the right freeze dump."""

    def _just_woke(self, now: float) -> bool:
        """The watchdog itself could not run for a while (GIL held) and faulthandler
        saw nothing of this loop: a live stack now shows the loop after the freeze,
        not in it. Watch afresh for a full threshold before declaring a live freeze
        (the heartbeat usually comes back first: then it is a late freeze)."""
        threshold = self.config.threshold
        if self._gil_frames() is None and self.watchdog_silent >= threshold / 2:
            self._woke_at = now
        return now - self._woke_at < threshold

    def _silent_gil_freeze(self) -> None:
        """faulthandler fired with this loop busy while no heartbeat was out (the
        loop was idle when the C call began): the loop was frozen for as long as
        the watchdog could not run - its silent stretch, within one interval."""
        cap = self.gil_capture
        threshold = self.config.threshold
        if (cap is None or cap.silent < threshold or self.allow_depth
                or not self.busy_in(cap)):
            return
        # The watchdog can be silent because the machine is loaded, not because
        # the GIL was held. If the loop ran Python (answered a heartbeat) inside
        # the silent stretch, it cannot have been frozen for the threshold on
        # either side of that answer: not a GIL-held freeze.
        start, answered = cap.read_at - cap.silent, self._answered_at
        if start < answered <= cap.read_at and max(answered - start,
                                                   cap.read_at - answered) < threshold:
            self.gil_capture = None
            return
        self.late_freezes += 1
        self._declare(time.monotonic(), cap.silent, {}, late=True,
                      since=cap.read_at - cap.silent)
        self.gil_capture = None
        if self._freeze is not None and self._freeze.doc is not None:
            self._freeze.doc["duration_measured_by"] = "watchdog silence"
        self._end_freeze(cap.silent)

    def _pin_from_sentinel(self, since: float, need_held_gil: bool = False) -> bool:
        """Pin a GIL-held freeze on the loop thread's Python stack from the
        sentinel's py-spy capture taken during it (the default way: no
        faulthandler signal, or where faulthandler is off)."""
        gl = _gil.layers()
        cfg = self.config
        if gl is None or not (cfg.sentinel and cfg.native) or gl.sentinel.proc is None:
            return False
        native = gl.sentinel_native(since, self)
        frames = _gil.python_frames(native, self._thread_id)
        code = self._idle_code
        idle_at = (os.path.abspath(code.co_filename), self._idle_line) if code else None
        if frames is None or _gil.idle(frames, idle_at):
            return False
        if need_held_gil and not _gil.holds_gil_in_c(native, self._thread_id):
            return False
        self._sentinel_pin = (frames, native)
        return True

    def _silent_sentinel_freeze(self, now: float) -> None:
        """The watchdog could not run for the threshold or more (and not because
        the machine was loaded, see _watchdog) while no heartbeat was out: if
        the sentinel caught the loop thread busy meanwhile, a C call held the GIL."""
        silent = self.watchdog_silent
        start, answered = now - silent, self._answered_at
        if start < answered and max(answered - start, now - answered) < self.config.threshold:
            return  # the loop ran Python (answered a beat) inside the silence: not frozen
        # No heartbeat was out, so nothing proves the loop stopped answering: a
        # busy loop can also starve the watchdog of the GIL (select(0) convoy).
        # Only py-spy's view of the loop thread owning the GIL inside a C
        # function proves a held GIL.
        if self.allow_depth or not self._pin_from_sentinel(start, need_held_gil=True):
            return
        self.late_freezes += 1
        self._declare(now, silent, {}, late=True, since=now - silent)
        self._sentinel_pin = None
        if self._freeze is not None and self._freeze.doc is not None:
            self._freeze.doc["duration_measured_by"] = "watchdog silence"
        self._end_freeze(silent)

    def _late_freeze(self, lag: float) -> None:
        """A beat answered after the threshold without a live detection: the
        watchdog itself could not run (GIL held by a C call) or the freeze ended
        between two checks. With a faulthandler capture (GIL held) it becomes a
        normal freeze dump, pinned on the captured stack, with its full duration."""
        if self._gil_frames() is not None and self.loop is not None:
            self.late_freezes += 1
            self._declare(time.monotonic(), lag, {}, late=True)
            self.gil_capture = None  # used
            self._end_freeze(lag)
            return
        if self.loop is not None and self._pin_from_sentinel(self._answered_at - lag):
            self.late_freezes += 1
            self._declare(time.monotonic(), lag, {}, late=True)
            self._sentinel_pin = None
            self._end_freeze(lag)
            return
        self.freezes += 1
        self.late_freezes += 1
        _metrics.freeze_detected(self)
        _metrics.freeze_ended(self, lag)
        reason = self._unseen_reason()
        path = self._unseen_dump(lag, reason)
        _report.emit(self, FreezeEvent("freeze_ended", self.name, round(lag, 3),
                                       dump_path=path, reason=reason))

    def _unseen_reason(self) -> str:
        cfg = self.config
        if not cfg.sentinel or not ((cfg.native and self._pyspy) or cfg.faulthandler):
            return ("not seen live: the watchdog could not run during it (a C call holding "
                    "the GIL?) and nothing else could look: install py-spy, and keep "
                    "sentinel and faulthandler on (docs/native.md)")
        return ("not seen live: it ended before the watchdog could look, or a C call held "
                "the GIL and py-spy could not take the loop thread's stack (see native.md)")

    def _unseen_dump(self, lag: float, reason: str) -> str | None:
        """A dump for a freeze nobody saw: when, how long, why no stack, and the
        tasks and threads as they are now (after it). Never a guessed line."""
        cfg = self.config
        if self.loop is None or _report.rate_limited(NOT_SEEN.where, cfg.dump_rate_window):
            return None
        snap = capture(
            kind="freeze", loop=self.loop, info=self._info(), detected_at=time.time(),
            blocked_for=lag, threshold=cfg.threshold,
            inflight=self._inflight_records(time.monotonic()),
            native=Native(False, error=reason), waits=self.waits,
        )
        extra = {**snap.extra, "seen_live": False, "duration": round(lag, 6),
                 "cause": "unknown", "kernel_summary": reason}
        snap = dataclasses.replace(snap, loop_frames=(), blocking_frame=NOT_SEEN,
                                   app_frame=None, extra=extra)
        return _report.write(self, snap, signature=NOT_SEEN.where)
