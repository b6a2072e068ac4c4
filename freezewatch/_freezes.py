"""Freezes seen live: declared when a heartbeat is a threshold late, updated
while they last, ended when the heartbeat runs (watchdog thread)."""

from __future__ import annotations

import os
import time
import types
from typing import Any

from . import _gil, _report
from ._events import FreezeEvent
from ._faulthandler import Capture
from ._loopstate import FreezeState, LoopState
from ._sinks import metrics as _metrics
from ._snapshot import kernel as _kernel
from ._snapshot.capture import capture
from ._snapshot.model import NATIVE_OFF, NATIVE_PENDING, Frame


class FreezeReports(LoopState):
    """Declare, update and end a freeze: dumps, events, metrics."""

    def _declare(self, now: float, age: float, tops: dict[int, types.FrameType],
                 late: bool = False, since: float | None = None) -> None:
        cfg = self.config
        if self._thread_id is None:
            self._locate_thread(tops)
        gil_frames = self._gil_frames()
        if gil_frames is None and self._debugger_stopped(tops):
            self._ignored_seq = self._sent_seq
            _report.emit(self, FreezeEvent("freeze_ignored", self.name, round(age, 3),
                                           reason="loop thread stopped in a debugger"), "info")
            return
        assert self.loop is not None
        # Unresponsive since the beat was sent, or since an allow_blocking()
        # block ended if that came later (the time before it was allowed).
        start = max(self._sent_at, self.allow_exit_at)
        snap = capture(
            kind="freeze", loop=self.loop, info=self._info(), detected_at=time.time(),
            blocked_for=time.monotonic() - start, threshold=cfg.threshold,
            inflight=self._inflight_records(now),
            native=NATIVE_PENDING if cfg.native else NATIVE_OFF, waits=self.waits,
            cpu_before=self._sent_cpu,
        )
        by = "py-spy (sentinel)" if self._sentinel_pin else "faulthandler"
        if gil_frames is not None:
            # The live stack is from after the GIL came back: pin on the one
            # captured during the freeze.
            snap = _gil.pin(snap, gil_frames, age if late else snap.blocked_for,
                            self.gil_capture, captured_by=by)
            # cause: GIL held, or a garbage collection that took most of it
            _kernel.held_gil(snap.extra, snap.loop_frames, self._thread_id,
                             snap.blocked_for, time.monotonic(), slack=2 * cfg.interval + 0.1)
        self.freezes += 1
        _metrics.freeze_detected(self)
        bf = snap.blocking_frame
        sig = bf.where
        path = None
        reason = None
        if _report.rate_limited(sig, cfg.dump_rate_window):
            reason = (f"rate limited: a dump for this frame was written in the last "
                      f"{cfg.dump_rate_window:g} s")
        else:
            path = _report.write(self, snap, signature=sig)
            if gil_frames is not None:
                reason = f"GIL held: stacks captured by {by} during the freeze"
        self._freeze = FreezeState(
            start=start, detected_at=snap.detected_at, signature=sig,
            frame=(bf.file, bf.line, bf.function), json_path=path,
            doc=snap.to_json() if path else None, next_update=start + cfg.update_after[0],
        ) if cfg.update_after else FreezeState(
            start=start, detected_at=snap.detected_at, signature=sig,
            frame=(bf.file, bf.line, bf.function), json_path=path,
            doc=snap.to_json() if path else None, next_update=float("inf"),
        )
        _report.emit(self, _report.event_for("freeze_detected", self, snap, snap.blocked_for,
                                             path, reason), snap=snap)
        if path and self._sentinel_pin is not None and self._freeze.doc is not None:
            self._freeze.doc["native"] = self._sentinel_pin[1].to_json()
            _report.write(self, self._freeze.doc, rewrite=path)
        elif path and cfg.native:
            if gil_frames is not None:
                self._add_gil_native(path, self._freeze.doc,
                                     self._sent_at if since is None else since)
            else:
                self._add_native(path, self._freeze.doc)

    def _gil_frames(self) -> tuple[Frame, ...] | None:
        if self._sentinel_pin is not None:
            return self._sentinel_pin[0]
        cap = self.gil_capture
        return cap.frames_of(self._thread_id) if cap is not None else None

    def busy_in(self, cap: Capture | None) -> bool:
        """True if the faulthandler capture shows this loop running code (not idle)."""
        frames = cap.frames_of(self._thread_id) if cap is not None else None
        code = self._idle_code
        idle_at = (os.path.abspath(code.co_filename), self._idle_line) if code else None
        return frames is not None and not _gil.idle(frames, idle_at)

    def _add_gil_native(self, path: str, doc: dict[str, Any] | None, since: float) -> None:
        """Native frames of a GIL-held freeze: the sentinel's, taken during it."""
        gl = _gil.layers()
        if doc is None or gl is None:
            return
        doc["native"] = gl.sentinel_native(since, self).to_json()
        _report.write(self, doc, rewrite=path)

    def _add_native(self, path: str, doc: dict[str, Any] | None) -> None:
        if doc is None:
            return
        native = _gil.live_native(self, self._pyspy)
        doc["native"] = native.to_json()
        _report.write(self, doc, rewrite=path)

    def _update(self, now: float, age: float) -> None:
        fr = self._freeze
        assert fr is not None and self.loop is not None
        cfg = self.config
        fr.updates += 1
        offsets = cfg.update_after
        i = min(fr.updates, len(offsets))
        step = offsets[-1] - (offsets[-2] if len(offsets) > 1 else 0.0)
        fr.next_update = fr.start + (
            offsets[i] if i < len(offsets) else offsets[-1] + step * (fr.updates - len(offsets) + 1)
        )
        snap = capture(
            kind="freeze-update", loop=self.loop, info=self._info(), detected_at=time.time(),
            blocked_for=age, threshold=cfg.threshold, inflight=self._inflight_records(now),
            native=NATIVE_PENDING if cfg.native else NATIVE_OFF, waits=self.waits,
            cpu_before=self._sent_cpu,
        )
        bf = snap.blocking_frame
        frame = (bf.file, bf.line, bf.function)
        moved = frame != fr.frame
        fr.frame = frame
        snap.extra.update(
            frame_moved=moved, update=fr.updates,
            first_dump=os.path.basename(fr.json_path) if fr.json_path else None,
        )
        path = _report.write(self, snap)
        _report.emit(self, _report.event_for(
            "freeze_updated", self, snap, age, path,
            reason="blocking frame moved" if moved else "blocking frame unchanged"), snap=snap)
        if path and cfg.native:
            self._add_native(path, snap.to_json())

    def _end_freeze(self, duration: float, reason: str | None = None) -> None:
        fr = self._freeze
        if fr is None:
            return
        self._freeze = None
        _metrics.freeze_ended(self, duration)
        if fr.doc is not None and fr.json_path is not None:
            fr.doc["duration"] = round(duration, 6)
            if reason:
                fr.doc["ended_because"] = reason
            _report.write(self, fr.doc, rewrite=fr.json_path)
        _report.emit(self, FreezeEvent("freeze_ended", self.name, round(duration, 3),
                                       blocked_at=fr.signature, dump_path=fr.json_path,
                                       reason=reason))
