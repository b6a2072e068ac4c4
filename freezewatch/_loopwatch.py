"""One watched loop: the handle users get, its heartbeat and the watchdog's round.

The state lives in ``_loopstate``; freezes, late freezes and stalls are
reported by the classes ``LoopWatch`` combines (``_freezes``,
``_late_freezes``, ``_stalls``). Threading: see ``_loopstate``.
"""

from __future__ import annotations

import selectors
import threading
import time
import types

from . import _idle, _report, _state
from ._events import FreezeEvent
from ._late_freezes import LateFreezes
from ._loopstate import loops_on_stack
from ._sched import RunDelay
from ._sinks import metrics as _metrics
from ._snapshot import kernel as _kernel
from ._stalls import STALL_SCAN_EVERY, StallReports

# Code objects of the selectors' select(): a loop thread whose innermost
# Python frame is one of these sits in epoll/poll/select waiting for I/O. It
# cannot be frozen, so it need not be woken by a heartbeat to prove it.
_SELECT_CODES = frozenset(
    fn.__code__
    for cls in vars(selectors).values()
    if isinstance(cls, type) and isinstance(fn := getattr(cls, "select", None), types.FunctionType)
)


class LoopWatch(LateFreezes, StallReports):
    """The handle install() returns: one watched event loop.

    Read-only attributes for users: ``loop``, ``config``, ``name``, ``active``,
    ``freezes`` (count), ``dumps`` (paths of .json dumps written),
    ``dump_failures``, ``stalls``. ``uninstall()`` stops watching this loop.
    """

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
        for cand in loops_on_stack(frame):
            # asyncio records the thread a loop runs in; a loop this thread only
            # refers to (it runs in another one) is not the one we wait for.
            runs_in = getattr(cand, "_thread_id", None)
            if cand.is_running() and runs_in in (None, self._install_thread):
                from . import _install

                _install.attach(self, cand)
                return
