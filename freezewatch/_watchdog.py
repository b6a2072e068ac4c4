"""The one watchdog thread: each round, observe every loop, ask the detector, act.

It waits on a wake-up flag with a timeout (never a bare sleep), so
uninstall() wakes it at once. It runs in a fresh contextvars.Context, so the
installer's request context does not leak into its events. What a round
concludes is ``_detect``'s (pure); what it writes is ``_pipeline``'s; this
module only observes (``_observe``), sequences and sleeps.
"""

from __future__ import annotations

import contextvars
import threading
import time
import types

from . import _detect, _observe, _registry, _selector, _state
from ._events import FreezeEvent
from ._faulthandler import Capture
from ._gil import GilLayers
from ._handle import LoopWatch
from ._loopwait import Wakeup
from ._pipeline import Pipeline, emit
from ._rundelay import RunDelay
from ._sinks import health, metrics, otel
from ._snapshot.frames import thread_top_frames

THREAD_NAME = "freezewatch-watchdog"
RUN_DELAY_EVERY = 0.5
MAX_PARK = 30.0  # longest parked sleep, a cap: the idle heartbeat (idle_beat_every) decides
IDLE_ANSWER_WAIT = 0.005  # after an idle loop's heartbeat the next round (it answers at once)
POLL_AFTER_FREEZE = 2.0
"""After a freeze decision the watchdog polls (no parking) this long: the dumps of a
freeze are completed over the next rounds (py-spy's trace, the sentinel's files)."""
_FREEZE_DECISIONS = (_detect.Declared, _detect.Ended, _detect.Late, _detect.SilentGil,
                     _detect.SilentSentinel)

_NO_FRAMES: dict[int, types.FrameType] = {}  # never written: observers only read it


class Watchdog:
    def __init__(self) -> None:
        # One flag for both reasons to wake early: stop(), and a parked
        # watchdog's loop leaving its selector (see _selector).
        self._event = Wakeup()
        self._stopping = False
        # True while the sentinel was told this thread sleeps by choice (parked):
        # only then must a loop that wakes us tell the sentinel too (``wake``).
        self._standing_down = False
        # Set at the end of each round: releases a saturated loop that stood
        # aside so this thread could take the GIL (see _selector.WakingSelector).
        self.handoff = threading.Event()
        # Replaced as a whole (copy-on-write) by install/uninstall; the
        # watchdog reads the reference once per round, so it needs no lock.
        self.watches: tuple[LoopWatch, ...] = ()
        # Handles dropped (uninstall) with a freeze open: ended when the thread stops.
        self.closing: list[LoopWatch] = []
        self._exits_before: dict[LoopWatch, int] = {}
        self._started = (time.monotonic(), time.process_time())
        # Parked on uvloop loops: (handle, its thread's schedstat count) (_park_kernel).
        self._on_kernel: list[tuple[LoopWatch, int]] = []
        self._loops_woke_at = 0.0  # when _sleep_on_kernel last saw such a loop run
        self._idle_sent = False  # this round sent an idle loop its heartbeat
        self._poll_until = 0.0  # no parking before (a freeze was just decided on)
        self.errors = 0
        self.rounds = 0  # rounds run (tests and benchmarks: parking shows here)
        # faulthandler + sentinel process: see what this thread cannot (a C
        # call holding the GIL). Used by this thread only.
        self.gil = GilLayers()
        self.pipeline = Pipeline()
        self._thread = threading.Thread(
            target=contextvars.Context().run, args=(self._run,), name=THREAD_NAME, daemon=True
        )

    def start(self, prime: bool = False) -> None:
        """Start the thread; ``prime``: start the sentinel first, on this thread
        (``GilLayers.prime``: install() does, so a freeze right after it is seen)."""
        if prime:
            try:
                self.gil.prime(self.watches)
            except Exception as e:  # boundary: the thread's first round tries again
                self._error("gil layers", e)
        # Silence counts from here: a C call holding the GIL can begin before
        # the thread's first round.
        self._started = (time.monotonic(), time.process_time())
        self._thread.start()
        self.gil.sentinel.watchdog_thread(self._thread.native_id)

    def is_alive(self) -> bool:
        return self._thread.is_alive()

    @property
    def ident(self) -> int | None:
        return self._thread.ident

    def stop(self, timeout: float = 2.0) -> None:
        self._stopping = True
        self._event.set()
        if self._thread.is_alive() and self._thread is not threading.current_thread():
            self._thread.join(timeout)

    def wake(self) -> None:
        """Called on a loop thread when its loop leaves select() while we are parked."""
        # The sleep we announced to the sentinel is cut short: silence counts
        # from now (a C call holding the GIL may follow at once). Not when this
        # thread is awake already (its round announced itself): an idle loop
        # running our heartbeat wakes us in the middle of the round that sent
        # it, and a byte on the sentinel's pipe would only wake the sentinel.
        if self._standing_down:
            self.gil.sentinel.resume()
        self._event.set()

    def _error(self, where: str, e: Exception) -> None:
        self.errors += 1
        _state.count_error("watchdog")
        if self.errors <= 20:
            emit(None, FreezeEvent("watchdog_error", where, 0.0,
                                   reason=f"{type(e).__name__}: {e}"), "error")

    def _run(self) -> None:
        try:
            self._rounds()
            self._finish()
        finally:
            self.pipeline.close()
            self.gil.close()  # cancel our faulthandler handler, let the sentinel go

    def _finish(self) -> None:
        """Watching stops: every freeze still open gets its end (freeze_ended, the
        duration in its dump, the metrics), not a dump that looks unfinished."""
        now = time.monotonic()
        for w in dict.fromkeys((*self.watches, *self.closing)):
            try:
                seq, at = w.answered()
                obs = _detect.Observation(now=now, answered_seq=seq, answered_at=at)
                for d in _detect.finish(w.state, obs):
                    if isinstance(d, _detect.Ended):
                        self.pipeline.ended(w, d)
                    elif isinstance(d, _detect.Late) and w.loop is not None:
                        self.pipeline.late(w, d, None)
            except Exception as e:  # boundary: one loop's last round
                self._error(w.name, e)

    # -- one loop -------------------------------------------------------------------
    def _tick(self, w: LoopWatch, now: float, tops: dict[int, types.FrameType],
              cap: Capture | None, silent: float) -> None:
        if w.loop is None:
            loop = _observe.find_loop(w, tops)
            if loop is not None:
                _registry.attach(w, loop)
            # A loop that held the GIL from its first step on (a C call before any
            # round saw it run): the capture taken in that silence is of this loop
            # if it shows the loop running; else we start watching next round.
            if w.loop is None or not _observe.ran_loop(cap, w.thread_ident):
                return
        obs = _observe.observe(w, now, tops, cap, silent)

        if _detect.needs_details(w.state, obs):
            obs = _observe.with_details(w, obs, tops)
        p = self.pipeline
        for d in _detect.step(w.state, obs):
            if isinstance(d, _FREEZE_DECISIONS):
                self._poll_until = now + POLL_AFTER_FREEZE
            if isinstance(d, _detect.Send):
                self._prepare(w)
                w.send()
                self._idle_sent = self._idle_sent or obs.idle
            elif isinstance(d, _detect.Lag):
                metrics.lag(w, d.seconds)  # a freeze's full duration is a lag sample too
                otel.record_lag(w.name, d.seconds)  # a None check unless instrumented
            elif isinstance(d, _detect.Declared):
                p.declared(w, d, cap)
            elif isinstance(d, _detect.UpdateDue):
                p.update(w, d)
            elif isinstance(d, _detect.Ended):
                p.ended(w, d)
            elif isinstance(d, _detect.Late):
                p.late(w, d, cap)
            elif isinstance(d, (_detect.SilentGil, _detect.SilentSentinel)):
                p.silent(w, d, cap)
            elif isinstance(d, _detect.BusySilence):
                p.busy_silence(w, d)
            elif isinstance(d, _detect.Suspended):
                emit(w, FreezeEvent("process_suspended", w.name, round(d.seconds, 3),
                                    reason=f"the loop thread waited {d.waited:.2f} s for a "
                                           f"CPU (machine overloaded)"), "info")
            elif isinstance(d, _detect.Ignored):
                emit(w, FreezeEvent("freeze_ignored", w.name, round(d.age, 3),
                                    reason=d.reason), "info")
            elif isinstance(d, _detect.ScanStalls):
                p.scan_stalls(w, now)
            elif isinstance(d, _detect.SampleWaits):
                w.state.next_wait_sample = now + w.waits.sample(w.loop, now)
            elif isinstance(d, _detect.Gone):
                p.forget(w)
                _registry.remove(w)
        if not w.state.pending and w.idle is not None:
            w.exits_seen = w.idle.exits
        w.frame_idle = obs.idle  # uvloop: parking looks at the kernel only while idle

    def _prepare(self, w: LoopWatch) -> None:
        """Before a loop's first beat: wrap its selector, so an idle loop can park us."""
        if w.idle is None and not w.idle_tried and w.loop is not None and _state.parts["selector"]:
            w.idle_tried = True
            state = _selector.IdleState(self.wake, self.handoff)
            w.idle = state if _selector.attach(w.loop, state) else None

    # -- parking --------------------------------------------------------------------
    def _park(self, watches: tuple[LoopWatch, ...], loop_woke: bool) -> float | None:
        """Sleep longer than ``interval`` when every loop waits (told: ``stand_down``)."""
        if not watches:
            self._exits_before = {}
            return None
        if self.pipeline.native.waiting or time.monotonic() < self._poll_until:
            return None  # a freeze's dumps are still being completed: no parking yet
        before, self._exits_before = self._exits_before, {
            w: w.idle.exits for w in watches if w.idle is not None}
        if loop_woke:
            # A loop cut our last parked sleep short: watch one interval unparked,
            # so the next round sees its selector's rate over a whole interval.
            return None
        if any(_detect.busy_selector(n, before.get(w)) for w, n in self._exits_before.items()):
            return None  # busy since the previous round: it will leave select() soon
        now = time.monotonic()
        waits = []
        self._on_kernel.clear()
        for w in watches:
            st = w.idle
            sleep = self._park_kernel(w, now) if st is None else _detect.park_for(
                w.state, now, in_select=st.in_select, moved=st.exits != w.exits_seen,
                has_units=bool(w.inflight), allow_depth=w.allow_depth)
            if sleep is not None and st is not None:
                # The selector wrapper reads ``parked`` after it writes its
                # flags; we write it before re-reading them: one of the two
                # sees the other, so a wake-up is never lost.
                st.parked = True
                if not st.in_select or st.exits != w.exits_seen:
                    sleep = None
            if sleep is None:
                for x in watches:
                    if x.idle is not None:
                        x.idle.parked = False
                return None
            waits.append(sleep)
        notifier = _state.notifier
        if notifier is not None:  # systemd must be fed on time
            waits.append(notifier.period / 2)
        return min([*waits, MAX_PARK])

    def _park_kernel(self, w: LoopWatch, now: float) -> float | None:
        """A loop without a selector wrapper (uvloop): park on the kernel's view of its
        thread (``_loopwait``); ``_sleep_on_kernel`` looks at it while parked."""
        # Only while its top frame is the idle one: each read is a syscall (a GIL hand-off).
        seen = w.kernel_wait() if w.frame_idle else None
        wakes_by = _detect.kernel_idle(w.state, seen, now, w.frame_idle)
        sleep = None if wakes_by is None or seen is None else _detect.park_for(
            w.state, now, in_select=True, moved=False, has_units=bool(w.inflight),
            allow_depth=w.allow_depth, wakes_by=wakes_by)
        if sleep is not None and seen is not None:
            self._on_kernel.append((w, seen.runs))
        return sleep

    def _sleep_on_kernel(self, wait: float, threshold: float) -> None:
        """Parked on uvloop loops: nothing wakes us when they wake, so look at each loop
        thread every interval (one pread, no round) and come back as soon as one ran.
        The sentinel is told half a threshold of chosen silence at a time: a C call
        holding the GIL right after such a loop woke is still seen in time."""
        step = min(w.config.interval for w, _ in self._on_kernel)
        end = time.monotonic() + wait
        while (left := end - time.monotonic()) > 0:
            self.gil.sentinel.stand_down(min(left, 0.5 * threshold) + 0.25)
            if self._event.wait(min(step, left)):
                return
            for w, runs in self._on_kernel:
                if w.kw is None or w.kw.runs() != runs:
                    self._loops_woke_at = time.monotonic()  # a round now, unparked: _park
                    return

    # -- the rounds -----------------------------------------------------------------
    def _rounds(self) -> None:
        # Opened on this thread: /proc/thread-self is the watchdog's own entry.
        own_delay = RunDelay("/proc/thread-self/schedstat")
        wall_before, cpu_before = self._started
        expected = wall_before
        own_before: float | None = None
        rd_at = -RUN_DELAY_EVERY
        parked_wait = loop_woke = False
        while not self._stopping:
            self._event.clear()  # a wake-up after this point makes the next wait return
            self.rounds += 1
            now = time.monotonic()
            cpu_top = time.process_time()
            watches = self.watches
            min_threshold = min((w.config.threshold for w in watches), default=1.0)
            late = now - expected
            silent = now - wall_before  # how long this thread could not run
            if parked_wait:
                # We chose to sleep: only what came after the wake-up we asked
                # for (a loop leaving select, or the timeout) is silence.
                woke = max([self._loops_woke_at,
                            *(w.idle.woke_at for w in watches if w.idle is not None)])
                loop_woke = woke > wall_before
                silent = now - woke if loop_woke else max(0.0, late)
                self.gil.sentinel.stand_down(0.0)
                self._standing_down = parked_wait = False
            try:
                self.pipeline.apply_native()  # py-spy traces taken since the last round
            except Exception as e:  # boundary: the dump-file sink
                self._error("native", e)
            try:
                cap = self.gil.round(now, watches, silent)
            except Exception as e:  # boundary: the GIL layers; detection goes on without them
                self._error("gil layers", e)
                cap = None
            verdict = None
            if watches and max(silent, late) > 0.5 * min_threshold:
                # Only after a silence: each run-delay read is a syscall.
                own = own_delay.read() if silent > 0.5 * min_threshold else None
                verdict = _detect.explain_silence(
                    silent=silent, late=late, min_threshold=min_threshold,
                    own_waited=None if own is None or own_before is None else own - own_before,
                    loops_waited=[after - w.rd_base for w in watches if own is not None
                                  and w.rd_base is not None
                                  and (after := w.loop_run_delay()) is not None],
                    cpu_used=time.process_time() - cpu_before, wall=now - wall_before)
            if verdict is not None:
                if verdict.kind == "starved":
                    cap = None  # what faulthandler saw was load, not a held GIL
                # a loop faulthandler saw busy meanwhile: a GIL-held freeze, no suspension
                busy = {w for w in watches if verdict.kind == "suspended"
                        and (g := _observe.gil_seen(w, cap)) is not None and g.busy}
                for w in watches:
                    if w not in busy:
                        _detect.void_pending(w.state, now, w.answered()[0])
                try:  # the sentinel's dump of that silence: removed, or kept if long
                    kept = self.gil.settle_sentinel_dumps(
                        wall_before, [(w.thread_ident, w.config) for w in watches
                                      if w not in busy], verdict.seconds, verdict.reason)
                except Exception as e:  # boundary: the GIL layers
                    kept = []
                    self._error("gil layers", e)
                emit(None, FreezeEvent("process_suspended", "*", round(verdict.seconds, 3),
                                       dump_path=next(iter(kept), None), reason=verdict.reason),
                     "info")
            tops: dict[int, types.FrameType] | None = None
            for w in watches:
                try:
                    if tops is None and _observe.needs_frames(w):
                        tops = thread_top_frames()
                    self._tick(w, now, _NO_FRAMES if tops is None else tops, cap,
                               0.0 if verdict is not None else silent)
                except Exception as e:  # boundary: one loop's round; the watchdog survives
                    self._error(w.name, e)
            del tops
            health.after_round(watches, now)  # gauges + systemd pings; never raises
            # A stop that lands inside this round (after `now` was read) is not
            # seen by the lateness check of the next round: check the round itself.
            spent = time.monotonic() - now
            if watches and _detect.round_stalled(spent, time.process_time() - cpu_top,
                                                 min_threshold):
                for w in watches:
                    _detect.void_pending(w.state, time.monotonic(), w.answered()[0])
            wait = min((_detect.next_wake(w.state, time.monotonic(), w.allow_depth,
                                          w.allow_exit_at) for w in watches), default=0.1)
            if self._idle_sent:
                # An idle loop answers its beat at once: look again while this
                # thread is still warm, not a whole interval later (uvloop; an
                # asyncio loop's selector wakes us anyway).
                wait, self._idle_sent = min(wait, IDLE_ANSWER_WAIT), False
            parked = self._park(watches, loop_woke)
            loop_woke = False
            if parked is not None:
                wait = parked
                parked_wait = True
                # The sentinel takes a silent watchdog for a held GIL: tell it
                # this silence is chosen (a loop that wakes clears it at once).
                self._standing_down = True
                self.gil.sentinel.stand_down(  # on uvloop: see _sleep_on_kernel
                    (min(wait, 0.5 * min_threshold) if self._on_kernel else wait) + 0.25)
            # Run-delay baselines, refreshed twice a second rather than every
            # round: each read is a syscall that hands the GIL to a busy loop
            # thread and back. A baseline up to 0.5 s old only widens the
            # window the starvation tests look at.
            if now - rd_at >= RUN_DELAY_EVERY:
                rd_at = now
                own_before = own_delay.read()
                for w in watches:
                    w.rd_base = w.loop_run_delay()
            wall_before = time.monotonic()
            cpu_before = time.process_time()
            expected = wall_before + wait
            self.handoff.set()  # wake loops standing aside for this round...
            self.handoff.clear()  # ...and re-arm for the next one
            for w in watches:
                if w.idle is not None:
                    w.idle.due = expected
            if parked is not None and self._on_kernel:
                self._sleep_on_kernel(wait, min_threshold)
            else:
                self._event.wait(wait)
