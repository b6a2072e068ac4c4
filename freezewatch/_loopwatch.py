"""One watched loop: its heartbeat, freeze and stall state, and the handle users get.

Threading: ``_beat`` runs on the loop thread; everything else here runs on
the watchdog thread (``tick``) or at install/uninstall. The two sides share
only plain attributes whose single stores are atomic under the GIL; no lock
is taken on the heartbeat path, so a frozen loop thread can never hold
something the watchdog waits for.
"""

from __future__ import annotations

import asyncio
import dataclasses
import os
import selectors
import sys
import threading
import time
import types
from typing import Any

from . import _gil, _idle, _report, _state
from ._config import Config
from ._events import FreezeEvent
from ._faulthandler import Capture
from ._inflight import Unit
from ._inflight import records as inflight_records
from ._inflight import snapshot as inflight_snapshot
from ._sched import RunDelay
from ._sinks import metrics as _metrics
from ._sinks.log import Hook
from ._snapshot import kernel as _kernel
from ._snapshot.capture import capture
from ._snapshot.model import NATIVE_OFF, NATIVE_PENDING, Frame, InflightUnit, LoopInfo, Native
from ._snapshot.native import find_pyspy
from ._snapshot.waits import WaitSampler

# Code objects of the selectors' select(): a loop thread whose innermost
# Python frame is one of these sits in epoll/poll/select waiting for I/O. It
# cannot be frozen, so it need not be woken by a heartbeat to prove it.
_SELECT_CODES = frozenset(
    fn.__code__
    for cls in vars(selectors).values()
    if isinstance(cls, type) and isinstance(fn := getattr(cls, "select", None), types.FunctionType)
)
_HANDLE_RUN = asyncio.events.Handle._run.__code__
_DEBUGGER_FILES = ("bdb.py", "pdb.py")
STALL_SCAN_EVERY = 0.5
NOT_SEEN = Frame("<not captured>", 0, "<freeze not seen live>", None)


def _loops_on_stack(frame: types.FrameType | None,
                    any_name: bool = False) -> list[asyncio.AbstractEventLoop]:
    """Event loops referenced by the frames of a stack, innermost first: by the
    locals ``self``, ``loop`` and ``self._loop`` (what runs a loop), or by any
    local with ``any_name``. Reads another thread's frames: tolerates changes."""
    found: list[asyncio.AbstractEventLoop] = []
    depth = 0
    while frame is not None and depth < 200:
        depth += 1
        try:
            local = frame.f_locals
            me = local.get("self")
            cands = [me, local.get("loop"), getattr(me, "_loop", None)]
            if any_name:
                cands.extend(local.values())
        except Exception:  # a frame changing under us: skip it
            cands = []
        found.extend(c for c in cands if isinstance(c, asyncio.AbstractEventLoop))
        frame = frame.f_back
    return found


@dataclasses.dataclass
class _Freeze:
    start: float  # monotonic: when the unanswered heartbeat was sent
    detected_at: float  # wall clock
    signature: str
    frame: tuple[str, int, str]
    json_path: str | None
    doc: dict[str, Any] | None
    next_update: float
    updates: int = 0


class LoopWatch:
    """The handle install() returns: one watched event loop.

    Read-only attributes for users: ``loop``, ``config``, ``name``, ``active``,
    ``freezes`` (count), ``dumps`` (paths of .json dumps written),
    ``dump_failures``, ``stalls``. ``uninstall()`` stops watching this loop.
    """

    def __init__(self, loop: asyncio.AbstractEventLoop | None, config: Config,
                 hooks: tuple[Hook, ...] = (), install_thread: int | None = None) -> None:
        self.loop = loop
        self.config = config
        self.hooks = hooks
        self.inflight: dict[int, Unit] = {}
        self.freezes = 0
        self.stalls = 0
        self.late_freezes = 0
        self.suspensions = 0
        self.dumps: list[str] = []
        self.dump_failures = 0
        self.closed = False
        self._install_thread = install_thread
        self._caller_thread = threading.get_ident()  # install() builds the handle
        self._thread_id: int | None = install_thread if loop is not None else None
        # Heartbeat. Sequence numbers tell a late answer from a current one.
        self._sent_seq = 0
        self._sent_at = 0.0
        self._pending = False
        self._answered_seq = 0
        self._answered_at = 0.0
        self._ignored_seq = -1  # a beat whose delay is explained (debugger, stopped loop)
        self._void_seq = -1  # a beat whose lag is void (process suspended meanwhile)
        self._last_real_beat = 0.0
        self._idle_code: types.CodeType | None = None
        self._idle_line = -1
        self._learned = False
        # Selector wrapper that lets the watchdog park while the loop is idle.
        self.idle: _idle.IdleState | None = None
        self._idle_tried = False
        self._exits_seen = -1
        self._beat_cb = self._beat  # bound once: no allocation per beat
        _kernel.watch_gc()  # a flag while a collection runs: cause "garbage collection"
        # allow_blocking(): depth > 0 suppresses; a beat sent before the last
        # exit is measured from that exit.
        self.allow_depth = 0
        self.allow_exit_at = 0.0
        self._freeze: _Freeze | None = None
        self._last_stall_scan = 0.0
        self.waits = WaitSampler()  # watchdog thread only
        self._next_wait_sample = 0.0
        self._pyspy = find_pyspy(config.pyspy_path) if config.native else None
        # Set by the watchdog before each tick: faulthandler's stacks when it
        # fired since the last round (the watchdog could not run: GIL held).
        self.gil_capture: Capture | None = None
        # A GIL-held freeze pinned on the sentinel's py-spy capture (frames, native).
        self._sentinel_pin: tuple[tuple[Frame, ...], Native] | None = None
        self._rd: RunDelay | None = None
        self._sent_rd: float | None = None
        self.rd_base: float | None = None  # loop thread's run delay, set by the watchdog
        self._sent_cpu: _kernel.CpuSample | None = None
        self._rd_tid: int | None = None
        self.watchdog_silent = 0.0  # seconds the watchdog could not run before this round
        self._woke_at = -1e9  # when the watchdog last came back from such a silence

    # -- public -----------------------------------------------------------
    @property
    def name(self) -> str:
        if self.config.name:
            return self.config.name
        from ._snapshot.threads import thread_name

        return thread_name(self._thread_id) or "loop"

    @property
    def active(self) -> bool:
        """True while a watchdog thread is watching (or waiting for) this loop."""
        wd = _state.watchdog
        return not self.closed and wd is not None and wd.is_alive() and self in wd.watches

    def blocked_for(self) -> float:
        """Seconds this loop has been unresponsive right now (0.0 when healthy)."""
        fr = self._freeze
        if fr is None and not self._pending:
            return 0.0
        start = max(fr.start if fr else self._sent_at, self.allow_exit_at)
        age = time.monotonic() - start
        return age if (fr is not None or age >= self.config.threshold) else 0.0

    def uninstall(self) -> None:
        """Stop watching this loop (idempotent)."""
        from . import _install

        _install.remove(self)

    def __repr__(self) -> str:
        state = "frozen" if self._freeze else ("active" if self.active else "inactive")
        return f"<freezewatch.LoopWatch {self.name!r} {state} freezes={self.freezes}>"

    @property
    def thread_ident(self) -> int | None:
        """The loop's thread (``threading.get_ident()``), once known."""
        return self._thread_id

    # -- loop thread --------------------------------------------------------
    def _beat(self, seq: int) -> None:
        # Runs on the loop thread: two stores and an ident call. Store the time
        # before the sequence: the watchdog reads the sequence first, so a new
        # sequence always comes with its time.
        self._answered_at = time.monotonic()
        self._answered_seq = seq
        self._thread_id = threading.get_ident()
        if not self._learned:
            self._learn_idle_frame()

    def _learn_idle_frame(self) -> None:
        """Remember where this loop's thread sits when idle (for loops without
        a Python-level selector, e.g. uvloop: the frame that called run_forever)."""
        self._learned = True
        caller = sys._getframe(2)
        if caller.f_code is not _HANDLE_RUN:
            self._idle_code, self._idle_line = caller.f_code, caller.f_lineno

    # -- watchdog thread ----------------------------------------------------
    def next_wake(self, now: float) -> float:
        """Seconds until this loop next needs the watchdog."""
        cfg = self.config
        if self._freeze is not None:
            return min(cfg.interval, max(0.0, self._freeze.next_update - now))
        if self._pending:
            if self.allow_depth or self._sent_seq == self._ignored_seq:
                # Nothing can be declared until the allowed block ends or the
                # ignored beat (debugger, suspension) is answered: check at the
                # interval instead of polling a deadline that has passed.
                return cfg.interval
            deadline = max(self._sent_at, self.allow_exit_at) + cfg.threshold
            return min(cfg.interval, max(0.001, deadline - now))
        return cfg.interval

    def loop_run_delay(self) -> float | None:
        """Seconds the loop's thread has waited for a CPU (see _sched); watchdog thread."""
        tid = self._thread_id
        if tid != self._rd_tid:
            self.close_run_delay()
            self._rd_tid = tid
            native = next((t.native_id for t in threading.enumerate() if t.ident == tid), None)
            self._rd = RunDelay.of_thread(native)
        return self._rd.read() if self._rd is not None else None

    def close_run_delay(self) -> None:
        if self._rd is not None:
            self._rd.close()
            self._rd = None

    def _loop_starved(self, age: float) -> bool:
        """The loop thread spent half the heartbeat's age waiting for a CPU: an
        overloaded machine or a throttled container, not a frozen loop. The beat
        is measured afresh, so a loop that is also frozen is still caught."""
        rd, before = self.loop_run_delay(), self._sent_rd
        if rd is None or before is None or rd - before < 0.5 * age:
            return False
        self.ignore_pending()
        self._sent_rd = rd
        _report.emit(self, FreezeEvent(
            "process_suspended", self.name, round(age, 3),
            reason=f"the loop thread waited {rd - before:.2f} s for a CPU (machine overloaded)"),
            "info")
        return True

    def ignore_pending(self) -> None:
        """The process was suspended as a whole: the pending beat proves nothing.

        A freeze already declared live stays declared: a suspension during it
        only lengthens it, and ending it here would record the next quick
        heartbeat's lag as its duration."""
        if self._freeze is not None:
            return
        if self._pending or self._answered_seq != self._sent_seq:
            # Measure the beat afresh from now rather than send a second one
            # while it is still queued; its lag is void either way.
            self._sent_at = time.monotonic()
            self._void_seq = self._sent_seq
        self.suspensions += 1

    def tick(self, now: float, tops: dict[int, types.FrameType]) -> None:
        loop = self.loop
        if loop is None:
            self._find_loop(tops)
            return
        if loop.is_closed():
            self._end_freeze(now - (self._freeze.start if self._freeze else now), "loop closed")
            from . import _install

            _install.remove(self, quiet=True)
            return
        cfg = self.config
        if self._pending and self._answered_seq == self._sent_seq:
            self._pending = False
            if self._sent_seq not in (self._ignored_seq, self._void_seq):
                lag = max(0.0, self._answered_at - max(self._sent_at, self.allow_exit_at))
                _metrics.lag(self, lag)  # a freeze's full duration is a lag sample too
                if self._freeze is not None:
                    self._end_freeze(lag)
                else:
                    if (lag >= cfg.threshold and self.allow_depth == 0
                            and not self._loop_starved(lag)):
                        self._late_freeze(lag)
        if self.gil_capture is not None and self._freeze is None and not self._pending:
            self._silent_gil_freeze()
        elif (self.watchdog_silent >= cfg.threshold and self._freeze is None
              and not self._pending):
            self._silent_sentinel_freeze(now)
        if self._pending:
            if not loop.is_running():
                # Stopped with our beat queued: not a freeze. Forget that beat.
                self._pending = False
                self._ignored_seq = self._sent_seq
                if self._freeze is not None:
                    self._end_freeze(now - self._freeze.start, "loop stopped")
                return
            age = now - max(self._sent_at, self.allow_exit_at)
            if self._freeze is None:
                if (age >= cfg.threshold and self.allow_depth == 0
                        and self._sent_seq != self._ignored_seq and not self._just_woke(now)):
                    if self._loop_starved(age):
                        return
                    self._declare(now, age, tops)
            elif now >= self._freeze.next_update:
                self._update(now, age)
            return
        if self.inflight and now - self._last_stall_scan >= STALL_SCAN_EVERY:
            self._last_stall_scan = now
            self._scan_stalls(now)
        if now >= self._next_wait_sample and loop.is_running():
            self._next_wait_sample = now + self.waits.sample(loop, now)
        if self.idle is None and not self._idle_tried and loop.is_running():
            self._idle_tried = True
            wd = _state.watchdog
            state = _idle.IdleState(wd.wake if wd is not None else (lambda: None),
                                    wd.handoff if wd is not None else None)
            self.idle = state if _idle.attach(loop, state) else None
        if self.idle is not None:
            self._exits_seen = self.idle.exits
        if not loop.is_running() or now - self._sent_at < cfg.interval:
            return
        if self._is_idle(tops) and now - self._last_real_beat < cfg.idle_beat_every:
            return
        self._send(now)

    def park_for(self, now: float) -> float | None:
        """Seconds the watchdog may sleep on this loop's behalf, counting on its
        selector wrapper to wake it (None: keep polling). Sets ``parked``; the
        watchdog clears it when it does not park after all."""
        st, cfg = self.idle, self.config
        if (st is None or self._pending or self._freeze is not None or self.inflight
                or self.allow_depth or not st.in_select or st.exits != self._exits_seen):
            return None
        st.parked = True
        if not st.in_select or st.exits != self._exits_seen:  # left select meanwhile
            st.parked = False
            return None
        return max(0.0, self._last_real_beat + cfg.idle_beat_every - now)

    def unpark(self) -> None:
        if self.idle is not None:
            self.idle.parked = False

    def detach_idle(self) -> None:
        if self.idle is not None and self.loop is not None:
            _idle.detach(self.loop)
            self.idle = None

    def _send(self, now: float) -> None:
        assert self.loop is not None
        self._sent_seq += 1
        # Stamp the send itself, not the round's start: under GIL contention a
        # round can take a while, and a stale stamp would add its length to
        # the measured lag (a busy, healthy loop would look frozen).
        # Nothing between the stamp and the send may release the GIL: a busy
        # loop can keep it from us for a while (select(0) convoy), and that
        # wait would count as the loop's lag.
        self._sent_rd = self.rd_base  # refreshed by the watchdog twice a second
        # The loop thread's CPU clock at the send (no syscall that releases
        # the GIL): a freeze's dump compares against it (spinning or blocked).
        self._sent_cpu = _kernel.cpu_sample(self._thread_id)
        self._sent_at = self._last_real_beat = time.monotonic()
        self._pending = True
        try:
            self.loop.call_soon_threadsafe(self._beat_cb, self._sent_seq)
        except RuntimeError:  # closed between our check and the call: loop gone
            self._pending = False

    def _is_idle(self, tops: dict[int, types.FrameType]) -> bool:
        if self.idle is not None:
            return self.idle.in_select
        top = tops.get(self._thread_id) if self._thread_id is not None else None
        if top is None:
            return False
        code = top.f_code
        if code in _SELECT_CODES:
            # select(timeout=0) is the poll a busy asyncio loop makes between
            # ready callbacks: busy, not waiting. Reading one local of another
            # thread's frame is safe under the GIL; it costs about a microsecond.
            try:
                return top.f_locals.get("timeout") != 0
            except Exception:
                return True
        return code is self._idle_code and top.f_lineno == self._idle_line

    def _find_loop(self, tops: dict[int, types.FrameType]) -> None:
        """install() ran before any loop: look for a running loop on the installing thread."""
        frame = tops.get(self._install_thread) if self._install_thread is not None else None
        for cand in _loops_on_stack(frame):
            if cand.is_running():
                from . import _install

                _install.attach(self, cand)
                return

    def _locate_thread(self, tops: dict[int, types.FrameType]) -> None:
        """Learn the loop's thread before its first heartbeat ran (install(loop=...)
        on a loop that was already frozen): asyncio records it on the loop; for
        uvloop (a C run_forever) find the thread whose stack holds the loop."""
        tid = getattr(self.loop, "_thread_id", None)
        if tid is None:
            me = threading.get_ident()  # the watchdog's own stack holds the loop too
            holders = [ident for ident, top in tops.items() if ident != me and any(
                cand is self.loop for cand in _loops_on_stack(top, any_name=True))]
            # The thread that called install(loop=...) holds a reference but
            # usually runs something else: prefer the others; guess only if unique.
            pick = [t for t in holders if t != self._caller_thread] or holders
            tid = pick[0] if len(pick) == 1 else None
        if tid is not None and self._thread_id is None:  # the beat may have won meanwhile
            self._thread_id = tid

    # -- detection results --------------------------------------------------
    def _info(self) -> LoopInfo:
        tid = self._thread_id
        if tid is None:
            tid = getattr(self.loop, "_thread_id", None)
        from ._snapshot.threads import thread_name

        return LoopInfo(self.name, tid, thread_name(tid))

    def _inflight_records(self, now: float, subject: Any = None) -> tuple[InflightUnit, ...]:
        """Units in flight; those of ``subject`` (default: the running task) are marked."""
        if subject is None and self.loop is not None:
            try:
                subject = asyncio.current_task(self.loop)
            except Exception:  # a foreign loop type: no task to mark
                subject = None
        return inflight_records(self.inflight, now, subject)

    def _debugger_stopped(self, tops: dict[int, types.FrameType]) -> bool:
        frame = tops.get(self._thread_id) if self._thread_id is not None else None
        while frame is not None:
            f = frame.f_code.co_filename
            if f.endswith(_DEBUGGER_FILES) or "pydevd" in f:
                return True
            frame = frame.f_back
        return False

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
            _kernel.held_gil(snap.extra, snap.loop_frames)  # cause: GIL held
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
        self._freeze = _Freeze(
            start=start, detected_at=snap.detected_at, signature=sig,
            frame=(bf.file, bf.line, bf.function), json_path=path,
            doc=snap.to_json() if path else None, next_update=start + cfg.update_after[0],
        ) if cfg.update_after else _Freeze(
            start=start, detected_at=snap.detected_at, signature=sig,
            frame=(bf.file, bf.line, bf.function), json_path=path,
            doc=snap.to_json() if path else None, next_update=float("inf"),
        )
        _report.emit(self, _report.event_for("freeze_detected", self, snap, snap.blocked_for,
                                             path, reason))
        if path and self._sentinel_pin is not None and self._freeze.doc is not None:
            self._freeze.doc["native"] = self._sentinel_pin[1].to_json()
            _report.write(self, self._freeze.doc, rewrite=path)
        elif path and cfg.native:
            if gil_frames is not None:
                self._add_gil_native(path, self._freeze.doc,
                                     self._sent_at if since is None else since)
            else:
                self._add_native(path, self._freeze.doc)

    def _just_woke(self, now: float) -> bool:
        """The watchdog itself could not run for a while (GIL held) and faulthandler
        saw nothing of this loop: a live stack now shows the loop after the freeze,
        not in it. Watch afresh for a full threshold before declaring a live freeze
        (the heartbeat usually comes back first: then it is a late freeze)."""
        threshold = self.config.threshold
        if self._gil_frames() is None and self.watchdog_silent >= threshold / 2:
            self._woke_at = now
        return now - self._woke_at < threshold

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
            reason="blocking frame moved" if moved else "blocking frame unchanged"))
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

    # -- stalls (watch() units overdue while the loop is alive) ---------------
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
        _report.emit(self, dataclasses.replace(ev, reason=reason or f"{unit.kind} {unit.name!r}"))

    def stall_ended(self, unit: Unit) -> None:
        """Called on the loop thread when a stalled unit finally finishes."""
        _report.emit(self, FreezeEvent("stall_ended", self.name,
                                       round(time.monotonic() - unit.started, 3),
                                       reason=f"{unit.kind} {unit.name!r}"), "info")
